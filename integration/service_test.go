package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// newServiceFleet is newFleet with a controller service driving the
// rollouts: labctl broker's (embedded pass) or a labctl controller beside
// mosquitto (mosquitto pass). The service's key is made here, so that
// every node pins it (controller_keys) before it starts, and the service
// trusts the operator's key only.
func newServiceFleet(t *testing.T, names []string, gen2Args map[string][]string) *fleet {
	return newServiceFleetArgs(t, names, gen2Args)
}

// newServiceFleetArgs is newServiceFleet with extra labctl broker flags.
func newServiceFleetArgs(t *testing.T, names []string, gen2Args map[string][]string, brokerArgs ...string) *fleet {
	e := NewEnv(t)
	e.service = true
	ctlKey, err := proto.GenerateKey("ctl-test")
	if err != nil {
		t.Fatal(err)
	}
	dir := e.controllerDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "controller.key"), []byte(ctlKey.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.brokerArgs = append([]string{"--trust-key", e.Key.Public().String()}, brokerArgs...)
	e.StartBroker()
	if externalBroker() == "mosquitto" {
		e.startController()
	}
	f := &fleet{Env: e, gen1: map[string]string{}, gen2: map[string]string{}}
	for _, name := range names {
		f.gen1[name] = e.Build(name, 1)
		f.gen2[name] = e.Build(name, 2, gen2Args[name]...)
		n := e.NewNode(name, []string{"web"}, f.gen1[name])
		n.appendConfig(fmt.Sprintf("controller_keys: [%q]\n", ctlKey.Public().String()))
		f.nodes = append(f.nodes, n)
	}
	e.DumpOnFailure(f.nodes...)
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(e.Dir, "controller.log")); err == nil {
				t.Logf("controller.log:\n%s", b)
			}
		}
	})
	return f
}

// controllerDir is where the env's controller service keeps its data.
func (e *Env) controllerDir() string {
	if externalBroker() == "mosquitto" {
		return filepath.Join(e.Dir, "controller")
	}
	return filepath.Join(e.Dir, "broker-data", "controller")
}

// startController runs `labctl controller` against the env's broker
// (the mosquitto pass), logging to controller.log.
func (e *Env) startController() {
	e.t.Helper()
	logf, err := os.OpenFile(filepath.Join(e.Dir, "controller.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := e.command(bin.labctl, "controller", "--controller-dir", e.controllerDir(), "--trust-key", e.Key.Public().String(), "--log-level", "debug")
	cmd.Env = append(append(append(cmd.Env, "LAB_BROKER="+e.BrokerURL()), e.labctlEnv()...), e.controllerEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.controller = cmd
	e.mu.Unlock()
	e.t.Cleanup(func() { stopProcess(cmd); logf.Close() })
	// Ready once it listens for requests (it logs it after subscribing).
	eventually(e.t, 30*time.Second, "the controller listens", func() bool {
		b, _ := os.ReadFile(logf.Name())
		return strings.Count(string(b), "controller service running") > e.controllerStarts
	})
	e.controllerStarts++
}

// killController SIGKILLs the controller service (with the embedded
// broker: the broker's process, which holds it), then starts it again on
// the same data.
func (e *Env) killController() {
	e.t.Helper()
	e.stopController()
	if externalBroker() != "mosquitto" {
		time.Sleep(300 * time.Millisecond) // the broker is down for a moment
	}
	e.startControllerAgain()
}

func (f *fleet) publishArgs(id string, extra ...string) []string {
	args := []string{"publish", "--id", id, "--key", f.KeyFile}
	for _, n := range f.nodes {
		args = append(args, "--toplevel", n.Name+"="+f.gen2[n.Name])
	}
	return append(args, extra...)
}

// The laptop sleeps (labctl publish frozen with SIGSTOP) right after wave
// 1 of a rolling rollout succeeded: the controller service opens the
// other waves, every node converges, and rollout show reports the
// outcome — publish was frozen the whole time.
func TestServiceFinishesWhileTheLaptopSleeps(t *testing.T) {
	f := newServiceFleet(t, []string{"n1", "n2", "n3"}, nil)
	f.startAll()
	var out strings.Builder
	cmd := f.labctlAsync(&out, f.publishArgs("r-sleep", "--strategy", "rolling", "--batch", "1")...)
	f.Watch().AwaitState(t, "n1", "r-sleep", proto.StateSucceeded, 60*time.Second)
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for _, n := range f.nodes {
		f.Watch().AwaitState(t, n.Name, "r-sleep", proto.StateSucceeded, 60*time.Second)
		if c := switched(n, "switch", f.gen2[n.Name]); c != 1 {
			t.Errorf("%s switched %d times", n.Name, c)
		}
	}
	if cmd.ProcessState != nil {
		t.Fatalf("publish was not asleep: it exited\n%s", out.String())
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if !strings.Contains(out.String(), "submitted to the controller service") {
		t.Errorf("publish did not say it submitted the rollout:\n%s", out.String())
	}
	eventually(t, 15*time.Second, "the record says succeeded", func() bool {
		code, so, _ := f.Labctl("rollout", "show", "r-sleep")
		return code == 0 && strings.Contains(so, "r-sleep: succeeded")
	})
	code, so, _ := f.Labctl("rollout", "list")
	if code != 0 || !strings.Contains(so, "r-sleep") {
		t.Errorf("rollout list: exit %d\n%s", code, so)
	}
}

// A multi-wave rollout submitted with --detach; the controller is
// SIGKILLed in the middle and started again on its data: it resumes the
// rollout from its store and completes it; no node switches twice.
func TestServiceResumesAfterSIGKILL(t *testing.T) {
	slow := []string{"--arg", "sleepSwitch", "2"}
	f := newServiceFleet(t, []string{"n1", "n2", "n3"}, map[string][]string{"n1": slow, "n2": slow, "n3": slow})
	f.startAll()
	code, so, se := f.Labctl(f.publishArgs("r-ckill", "--strategy", "rolling", "--batch", "1", "--detach")...)
	if code != 0 || !strings.Contains(so, "submitted") {
		t.Fatalf("publish --detach: exit %d\n%s%s", code, so, se)
	}
	f.Watch().AwaitState(t, "n2", "r-ckill", proto.StateActivating, 60*time.Second)
	f.killController()
	for _, n := range f.nodes {
		f.Watch().AwaitState(t, n.Name, "r-ckill", proto.StateSucceeded, 90*time.Second)
		if c := switched(n, "switch", f.gen2[n.Name]); c != 1 {
			t.Errorf("%s switched %d times", n.Name, c)
		}
	}
	logName := "broker.log" // the embedded broker's process holds the service
	if externalBroker() == "mosquitto" {
		logName = "controller.log"
	}
	if b, _ := os.ReadFile(filepath.Join(f.Dir, logName)); !strings.Contains(string(b), `msg="resuming rollout" component=controller rollout=r-ckill`) {
		t.Errorf("the restarted controller did not resume r-ckill from its store (%s)", logName)
	}
	eventually(t, 15*time.Second, "the record says succeeded", func() bool {
		code, so, _ := f.Labctl("rollout", "show", "r-ckill")
		return code == 0 && strings.Contains(so, "r-ckill: succeeded")
	})
}

// A submission whose Desired states the controller does not trust is
// refused with the reason, and nothing reaches the node; without a
// controller publish says so at once and names --local-controller.
func TestServiceRefusesAForgedSubmission(t *testing.T) {
	f := newServiceFleet(t, []string{"n1"}, nil)
	f.startAll()
	other, err := proto.GenerateKey("mallory")
	if err != nil {
		t.Fatal(err)
	}
	forged := filepath.Join(f.Dir, "mallory.key")
	if err := os.WriteFile(forged, []byte(other.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, so, se := f.Labctl("publish", "--id", "r-forged", "--key", forged, "--toplevel", "n1="+f.gen2["n1"])
	if code != 2 || !strings.Contains(se, "refused") || !strings.Contains(se, "mallory") {
		t.Fatalf("forged publish: exit %d, want 2 with the reason\n%s%s", code, so, se)
	}
	time.Sleep(time.Second)
	if st, _ := f.Watch().Status("n1"); st.Execution.Rollout == "r-forged" || f.nodes[0].Current() != f.gen1["n1"] {
		t.Errorf("the forged rollout reached n1: %+v", st.Execution)
	}
	if code, so, _ := f.Labctl("rollout", "show", "r-forged"); code == 0 {
		t.Errorf("a refused rollout was recorded:\n%s", so)
	}
}

// A scheduled rollout (--at) publishes nothing before its time and then
// runs, with the submitter gone; one limited to a maintenance window that
// is closed now waits (and is cancelled here).
func TestServiceScheduleAndWindow(t *testing.T) {
	f := newServiceFleet(t, []string{"n1", "n2"}, nil)
	f.startAll()
	at := time.Now().Add(8 * time.Second).Truncate(time.Second)
	code, so, se := f.Labctl(f.publishArgs("r-at", "--at", at.Format(time.RFC3339), "--detach")...)
	if code != 0 || !strings.Contains(se, "scheduled: not before") {
		t.Fatalf("publish --at: exit %d\n%s%s", code, so, se)
	}
	time.Sleep(time.Until(at) - 2*time.Second)
	for _, n := range f.nodes {
		if st, _ := f.Watch().Status(n.Name); st.Execution.Rollout == "r-at" || len(n.Switches()) != 0 {
			t.Fatalf("%s acted before the rollout's time: %+v", n.Name, st.Execution)
		}
	}
	for _, n := range f.nodes {
		s := f.Watch().AwaitState(t, n.Name, "r-at", proto.StateSucceeded, 60*time.Second)
		if s.Execution.Since < at.UnixMilli() {
			t.Errorf("%s started at %d, before %s", n.Name, s.Execution.Since, at)
		}
	}

	// A window that is closed now: nothing opens.
	from := time.Now().Add(3 * time.Hour)
	window := fmt.Sprintf("%s-%s", from.Format("15:04"), from.Add(time.Hour).Format("15:04"))
	args := []string{"publish", "--id", "r-window", "--key", f.KeyFile, "--window", window, "--detach"}
	for _, n := range f.nodes {
		args = append(args, "--toplevel", n.Name+"="+f.gen1[n.Name])
	}
	code, so, se = f.Labctl(args...)
	if code != 0 || !strings.Contains(se, "waves open only between "+window) {
		t.Fatalf("publish --window: exit %d\n%s%s", code, so, se)
	}
	time.Sleep(3 * time.Second)
	for _, n := range f.nodes {
		if st, _ := f.Watch().Status(n.Name); st.Execution.Rollout == "r-window" {
			t.Errorf("%s acted outside the window: %+v", n.Name, st.Execution)
		}
	}
	if code, so, se := f.Labctl("rollout", "cancel", "r-window"); code != 0 {
		t.Fatalf("cancel: exit %d\n%s%s", code, so, se)
	}
	eventually(t, 15*time.Second, "the record says cancelled", func() bool {
		code, so, _ := f.Labctl("rollout", "show", "r-window")
		return strings.Contains(so, "r-window: cancelled") && code == 6
	})
}

// A reboot sequence with the laptop gone: labctl reboot --detach hands
// the job to the controller service, which reboots the machines in reboot
// order, one at a time, each back before the next; labctl reboot --job
// reports the outcome afterwards.
func TestServiceRebootsWithTheLaptopGone(t *testing.T) {
	f := newServiceFleet(t, []string{"n1", "n2"}, nil)
	order := map[string]int{"n2": 1, "n1": 2}
	for _, n := range f.nodes {
		n.appendConfig(fmt.Sprintf("machine: {reboot_order: %d}\n", order[n.Name]))
	}
	f.startAll()
	eventually(t, 10*time.Second, "reboot orders in status", func() bool {
		s, ok := f.Watch().Status("n1")
		return ok && s.Machine.RebootOrder == 2
	})
	code, so, se := f.Labctl("reboot", "--on", "@web", "--id", "reboot-night", "--deadline", "60s", "--detach")
	if code != 0 || !strings.Contains(se, "in this order: n2 n1") {
		t.Fatalf("reboot --detach: exit %d\n%s%s", code, so, se)
	}
	byName := map[string]*Node{"n1": f.nodes[0], "n2": f.nodes[1]}
	for i, name := range []string{"n2", "n1"} {
		n := byName[name]
		eventually(t, 30*time.Second, name+" asked to reboot", n.rebootRequested)
		for _, other := range f.nodes {
			if other != n && other.rebootRequested() {
				t.Fatalf("%s asked to reboot while %s reboots", other.Name, name)
			}
		}
		n.reboot(2 + i)
	}
	code, so, se = f.Labctl("reboot", "--job", "reboot-night")
	if code != 0 || strings.Count(so, "rebooted") != 2 {
		t.Fatalf("reboot --job: exit %d\n%s%s", code, so, se)
	}
}

// rollout retry publishes the rollout again to its failed targets only.
func TestServiceRetriesTheFailedTargets(t *testing.T) {
	f := newServiceFleet(t, []string{"n1", "n2"}, map[string][]string{"n1": {"--arg", "failHealth", "true"}})
	f.startAll()
	code, out := f.publish("r-flaky", "--max-failures", "1", "--timeout", "90s")
	if code != exitRolledBack {
		t.Fatalf("publish exit %d, want %d\n%s", code, exitRolledBack, out)
	}
	code, so, se := f.Labctl("rollout", "retry", "r-flaky", "--key", f.KeyFile, "--timeout", "90s")
	if code != exitRolledBack || !strings.Contains(se, "as r-flaky-retry for 1 targets: n1") {
		t.Fatalf("retry: exit %d, want %d (n1 fails again)\n%s%s", code, exitRolledBack, so, se)
	}
	f.Watch().AwaitState(t, "n1", "r-flaky-retry", proto.StateRolledBack, 30*time.Second)
	if c := switched(f.nodes[1], "switch", f.gen2["n2"]); c != 1 {
		t.Errorf("n2 switched %d times: the retry reached a target that had succeeded", c)
	}
	if st, _ := f.Watch().Status("n2"); st.Execution.Rollout != "r-flaky" {
		t.Errorf("n2 took part in the retry: %+v", st.Execution)
	}
}

// --on-failure rollback through the service: the halt switches the target
// that succeeded back with the way back the operator signed, and labctl
// publish, only watching, reports the way back with the result.
func TestServiceRollsBackWhatSwitched(t *testing.T) {
	f := newServiceFleet(t, []string{"n1", "n2", "n3"}, map[string][]string{"n2": {"--arg", "failHealth", "true"}})
	f.startAll()
	rollsBackWhatSwitched(t, f, "r-svc-undo")
	code, so, se := f.Labctl("rollout", "show", "r-svc-undo", "--json")
	if code == 0 || !strings.Contains(so, `"rollback"`) || strings.Contains(so, `"rolling_back": true`) {
		t.Errorf("rollout show: exit %d, want the record with its way back's result\n%s%s", code, so, se)
	}
}
