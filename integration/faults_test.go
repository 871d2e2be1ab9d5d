package integration

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/faultproxy"
	"github.com/lab-fleet/lab/proto"
)

// killBroker SIGKILLs the broker, as a power cut of its host would.
func (e *Env) killBroker() {
	e.t.Helper()
	e.mu.Lock()
	cmd := e.broker
	e.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
}

// The broker dies (SIGKILL) in the middle of a rolling rollout and comes
// back on the same data: retained state and sessions survive, every
// client reconnects, and the rollout completes.
func TestBrokerKilledMidRollout(t *testing.T) {
	slow := []string{"--arg", "sleepSwitch", "2"}
	f := newFleet(t, []string{"n1", "n2", "n3"}, map[string][]string{"n1": slow, "n2": slow, "n3": slow})
	f.startAll()
	args := []string{"publish", "--id", "r-bkill", "--key", f.KeyFile, "--strategy", "rolling", "--batch", "1", "--timeout", "120s"}
	for _, n := range f.nodes {
		args = append(args, "--toplevel", n.Name+"="+f.gen2[n.Name])
	}
	var out strings.Builder
	cmd := f.labctlAsync(&out, args...)
	f.Watch().AwaitState(t, "n1", "r-bkill", proto.StateActivating, 30*time.Second)
	f.killBroker()
	time.Sleep(500 * time.Millisecond) // the broker is down for a moment
	f.StartBroker()
	if code := exitCode(cmd.Wait()); code != exitSucceeded {
		t.Fatalf("publish exit %d after the broker restart\n%s", code, out.String())
	}
	if strings.Contains(out.String(), "published again") {
		t.Errorf("labctl published Desired states again although the broker kept them:\n%s", out.String())
	}
	for _, n := range f.nodes {
		f.Watch().AwaitState(t, n.Name, "r-bkill", proto.StateSucceeded, 30*time.Second)
		if c := switched(n, "switch", f.gen2[n.Name]); c != 1 {
			t.Errorf("%s switched %d times", n.Name, c)
		}
	}
}

// wipeBrokerData deletes the stopped broker's store (the embedded
// broker's data directory, mosquitto's database): a broker replaced by a
// new host, or restored from a backup older than the rollout.
func (e *Env) wipeBrokerData() {
	e.t.Helper()
	for _, p := range []string{filepath.Join(e.Dir, "broker-data"), filepath.Join(e.Dir, "mosquitto", "mosquitto.db")} {
		if err := os.RemoveAll(p); err != nil {
			e.t.Fatal(err)
		}
	}
}

// The broker dies mid-rollout and comes back with nothing it held: the
// labctl following the rollout sees that the Desired of a target still
// asleep is gone and publishes it again, so that the target converges
// when it wakes; the target that had already switched does not switch
// again.
func TestBrokerLosesItsStoreMidRollout(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2"}, nil)
	f.startNodes(f.nodes[:1]) // n2 is asleep
	var out strings.Builder
	cmd := f.labctlAsync(&out, "publish", "--id", "r-wipe", "--key", f.KeyFile, "--timeout", "60s", "--allow-unseen",
		"--toplevel", "n1="+f.gen2["n1"], "--toplevel", "n2="+f.gen2["n2"])
	f.Watch().AwaitState(t, "n1", "r-wipe", proto.StateSucceeded, 30*time.Second)
	f.killBroker()
	f.wipeBrokerData()
	f.StartBroker()
	f.startNodes(f.nodes[1:])
	if code := exitCode(cmd.Wait()); code != exitSucceeded {
		t.Fatalf("publish exit %d after the broker lost its store\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), "published again") {
		t.Errorf("labctl did not say it published lost Desired states again:\n%s", out.String())
	}
	for _, n := range f.nodes {
		f.Watch().AwaitState(t, n.Name, "r-wipe", proto.StateSucceeded, 30*time.Second)
		if c := switched(n, "switch", f.gen2[n.Name]); c != 1 {
			t.Errorf("%s switched %d times, want 1", n.Name, c)
		}
	}
}

// QoS 1 delivers at least once, and a broker can reorder: the same
// Desired twice switches once, and an older one after a newer one is
// refused — never a downgrade.
func TestDuplicateAndReorderedDesired(t *testing.T) {
	f := newFleet(t, []string{"n1"}, nil)
	f.startAll()
	c, ctx := f.dialController("dup-" + proto.NewID()[:6])
	mk := func(gen uint64, toplevel string) []byte {
		d := &proto.Desired{Node: "n1", Rollout: "r-dup", Gen: gen, Toplevel: toplevel, Action: proto.ActionSwitch}
		d.Stamp("labctl", time.Now())
		if err := proto.Sign(d, f.Key); err != nil {
			t.Fatal(err)
		}
		b, err := proto.Seal(d)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	gen := uint64(time.Now().UnixMilli())
	newer, older := mk(gen+10, f.gen2["n1"]), mk(gen, f.gen1["n1"])
	topic := proto.DefaultTopics.NodeDesired("n1")
	for range 3 {
		if err := c.Publish(ctx, topic, newer, false); err != nil {
			t.Fatal(err)
		}
	}
	f.Watch().AwaitState(t, "n1", "r-dup", proto.StateSucceeded, 30*time.Second)
	if err := c.Publish(ctx, topic, older, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the older desired rejected", func() bool {
		for _, ev := range f.Watch().Events("n1") {
			if ev.State == proto.StateRejected && strings.Contains(ev.Detail, "replayed or stale") {
				return true
			}
		}
		return false
	})
	if n := switched(f.nodes[0], "switch", f.gen2["n1"]); n != 1 || f.nodes[0].Current() != f.gen2["n1"] {
		t.Fatalf("switched to gen 2 %d times, now at %s (switches %v)", n, f.nodes[0].Current(), f.nodes[0].Switches())
	}
}

// labd SIGKILLed while it verifies (a slow health check) resumes
// verifying after its restart: one activation, then succeeded.
func TestRestartDuringVerification(t *testing.T) {
	f := newFleet(t, []string{"n1"}, nil)
	n := f.nodes[0]
	n.appendConfig("  - {name: slow, type: command, command: [sleep, \"3\"], timeout: 10s, retries: -1}\n")
	f.startAll()
	if code, _ := f.publish("r-verify", "--no-wait"); code != 0 {
		t.Fatalf("publish --no-wait exit %d", code)
	}
	f.Watch().AwaitState(t, "n1", "r-verify", proto.StateVerifying, 60*time.Second)
	n.Kill()
	n.Start()
	s := f.Watch().AwaitState(t, "n1", "r-verify", proto.StateSucceeded, 60*time.Second)
	if c := switched(n, "switch", f.gen2["n1"]); c != 1 || s.AppliedGen != s.Execution.Gen {
		t.Errorf("activated %d times (want 1), applied %d of %d", c, s.AppliedGen, s.Execution.Gen)
	}
	if !s.Checks["slow"].OK || !s.Checks["system-healthy"].OK {
		t.Errorf("checks after the restart: %+v", s.Checks)
	}
}

// A node whose state directory breaks (here: replaced by a file, as a
// failed disk or a read-only mount would) says so in its status and does
// not start an execution it could not record — nothing is changed; the
// problem clears once it can save again.
func TestBrokenStateDirIsReported(t *testing.T) {
	f := newFleet(t, []string{"n1"}, nil)
	n := f.nodes[0]
	f.startAll()
	stateDir := n.Dir + "/state"
	if err := os.Rename(stateDir, stateDir+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stateDir, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	// It cannot record a new execution, so it does not start one.
	if code, _ := f.publish("r-disk", "--timeout", "60s"); code != exitFailed {
		t.Fatalf("publish exit %d, want %d", code, exitFailed)
	}
	s := f.Watch().AwaitState(t, "n1", "r-disk", proto.StateFailed, 10*time.Second)
	if !strings.Contains(s.Execution.Error, "nothing was changed") || n.Current() != f.gen1["n1"] || len(n.Switches()) != 0 {
		t.Errorf("error %q, profile %s, switches %v", s.Execution.Error, n.Current(), n.Switches())
	}
	eventually(t, 10*time.Second, "the problem in n1's status", func() bool {
		s, _ = f.Watch().Status("n1")
		return len(s.Problems) == 1 && strings.Contains(s.Problems[0], "save node state")
	})
	code, out, _ := f.Labctl("status")
	if code != 0 || !strings.Contains(out, "failed (!)") || !strings.Contains(out, "(!) n1: save node state") {
		t.Errorf("labctl status does not show the problem:\n%s", out)
	}
	// Repaired: the next transition saves and clears it.
	if err := os.Remove(stateDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(stateDir+".moved", stateDir); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := f.Labctl("publish", "--id", "r-disk2", "--key", f.KeyFile, "--toplevel", "n1="+f.gen2["n1"], "--timeout", "60s"); code != exitSucceeded {
		t.Fatalf("second publish exit %d", code)
	}
	eventually(t, 10*time.Second, "the problem cleared", func() bool {
		s, _ = f.Watch().Status("n1")
		return s.Execution.Rollout == "r-disk2" && len(s.Problems) == 0
	})
}

// A broken activation run directory (state_dir/activation replaced by a
// file) is found before the profile moves: the node ends failed, "nothing
// was changed", with the profile and the running system untouched — not
// rollback-failed — and works again once the directory is repaired.
func TestBrokenActivationDirFailsBeforeTheProfileMoves(t *testing.T) {
	f := newFleet(t, []string{"n1"}, nil)
	n := f.nodes[0]
	f.startAll()
	runDir := n.Dir + "/state/activation"
	if err := os.RemoveAll(runDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(runDir, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := f.publish("r-actdir", "--timeout", "60s"); code != exitFailed {
		t.Fatalf("publish exit %d, want %d\n%s", code, exitFailed, out)
	}
	s := f.Watch().AwaitState(t, "n1", "r-actdir", proto.StateFailed, 10*time.Second)
	if !strings.Contains(s.Execution.Error, "nothing was changed") || !strings.Contains(s.Execution.Error, "activation run directory") {
		t.Errorf("status error %q does not say that nothing was changed and why", s.Execution.Error)
	}
	if n.Current() != f.gen1["n1"] || len(n.Switches()) != 0 {
		t.Errorf("the node changed: profile %s (want gen 1), switches %v", n.Current(), n.Switches())
	}
	if err := os.Remove(runDir); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := f.Labctl("publish", "--id", "r-actdir2", "--key", f.KeyFile, "--toplevel", "n1="+f.gen2["n1"], "--timeout", "60s"); code != exitSucceeded {
		t.Fatalf("publish after the repair: exit %d", code)
	}
	if n.Current() != f.gen2["n1"] || switched(n, "switch", f.gen2["n1"]) != 1 {
		t.Errorf("after the repair: profile %s, switches %v", n.Current(), n.Switches())
	}
}

// Magic rollback, the other half: the new configuration breaks the
// machine's health endpoint (an HTTP check). The node keeps retrying it
// until the confirm deadline, then rolls back by itself — and the
// endpoint, restored by the old configuration, passes again.
func TestMagicRollbackWhenActivationBreaksHealthEndpoint(t *testing.T) {
	e := NewEnv(t)
	e.StartBroker()
	broken := filepath.Join(e.Dir, "health-broken")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat(broken); err == nil {
			http.Error(w, "service down", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	g1 := e.Build("n1", 1, "--argstr", "onSwitch", "rm -f "+broken)
	g2 := e.Build("n1", 2, "--argstr", "onSwitch", "touch "+broken)
	n := e.NewNode("n1", []string{"web"}, g1)
	e.DumpOnFailure(n)
	n.appendConfig(fmt.Sprintf("  - {name: web, type: http, url: %q, expect_status: 204, interval: 500ms, retries: 1000}\n", srv.URL+"/health"))
	n.Start()
	eventually(t, 30*time.Second, "n1 online", func() bool { return e.Watch().Online("n1") })
	code, out, _ := e.Labctl("publish", "--id", "r-web", "--key", e.KeyFile, "--toplevel", "n1="+g2, "--confirm-timeout", "6s", "--timeout", "90s")
	if code == exitSucceeded {
		t.Fatalf("publish succeeded with a broken health endpoint:\n%s", out)
	}
	s := e.Watch().AwaitState(t, "n1", "r-web", proto.StateTimedOut, 30*time.Second)
	if s.Execution.Error != "verifying timed out; rolled back to the previous system" {
		t.Errorf("status error %q", s.Execution.Error)
	}
	if n.Current() != g1 || switched(n, "switch", g2) != 1 || switched(n, "switch", g1) != 1 {
		t.Errorf("profile %s, switches %v: want gen 2 once, then back on gen 1", n.Current(), n.Switches())
	}
	if _, err := os.Stat(broken); err == nil {
		t.Error("the old configuration's activation did not restore the endpoint")
	}
	// The machine's checks after the rollback: the endpoint answers again.
	r, err := http.Get(srv.URL + "/health")
	if err != nil || r.StatusCode != http.StatusNoContent {
		t.Errorf("health endpoint after the rollback: %v %v", r, err)
	}
}

// The node's connection goes half-open while it activates (a NAT mapping
// dies, a laptop sleeps): the proxy between node and broker drops every
// byte but closes nothing, with 100 ms latency on top. Both sides notice
// by keepalive, the broker publishes the node's will (offline), and once
// the path works again the node reconnects, confirms and succeeds —
// without a second activation.
func TestHalfOpenConnectionDuringRollout(t *testing.T) {
	e := NewEnv(t)
	e.StartBroker()
	proxy, err := faultproxy.Listen("127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", e.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	proxy.SetDelay(100 * time.Millisecond)
	g1, g2 := e.Build("n1", 1), e.Build("n1", 2, "--arg", "sleepSwitch", "2")
	n := e.NewNode("n1", []string{"web"}, g1)
	e.DumpOnFailure(n)
	n.setBroker("mqtt://"+proxy.Addr(), "keepalive: 2s")
	n.Start()
	eventually(t, 30*time.Second, "n1 online", func() bool { return e.Watch().Online("n1") })
	var out strings.Builder
	cmd := e.labctlAsync(&out, "publish", "--id", "r-half", "--key", e.KeyFile, "--toplevel", "n1="+g2,
		"--confirm-timeout", "90s", "--timeout", "150s")
	e.Watch().AwaitState(t, "n1", "r-half", proto.StateActivating, 30*time.Second)
	proxy.Blackhole(true)
	eventually(t, 30*time.Second, "the broker to give n1 up (its will: offline)", func() bool { return !e.Watch().Online("n1") })
	time.Sleep(3 * time.Second) // the node's reconnects meet the blackhole too
	proxy.Blackhole(false)
	if code := exitCode(cmd.Wait()); code != exitSucceeded {
		t.Fatalf("publish exit %d\n%s", code, out.String())
	}
	s := e.Watch().AwaitState(t, "n1", "r-half", proto.StateSucceeded, 10*time.Second)
	if n.Current() != g2 || s.AppliedGen != s.Execution.Gen || len(n.Switches()) != 1 {
		t.Errorf("profile %s applied %d/%d switches %v", n.Current(), s.AppliedGen, s.Execution.Gen, n.Switches())
	}
	if proxy.Accepted() < 2 {
		t.Errorf("the node connected %d times through the proxy: it never reconnected", proxy.Accepted())
	}
}

// Gates and commands, delivered twice or out of order: the same reboot
// command twice reboots once; a gate older than the one the node holds
// is refused as stale, the same gate again is ignored.
func TestDuplicateAndReorderedGatesAndCommands(t *testing.T) {
	f := newFleet(t, []string{"n1"}, nil)
	n := f.nodes[0]
	reboots := filepath.Join(n.Dir, "reboots")
	b, err := os.ReadFile(n.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), fmt.Sprintf("reboot_command: [touch, %q]", n.rebootMarker()),
		fmt.Sprintf("reboot_command: [sh, -c, 'echo reboot >> \"$0\"', %q]", reboots), 1)
	if err := os.WriteFile(n.Config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	f.startAll()
	c, ctx := f.dialController("dup-" + proto.NewID()[:6])
	seal := func(m proto.Signable) []byte {
		m.Header().Stamp("labctl", time.Now())
		if err := proto.Sign(m, f.Key); err != nil {
			t.Fatal(err)
		}
		b, err := proto.Seal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tp := proto.DefaultTopics
	cmd := seal(&proto.Command{Op: proto.OpReboot, Targets: []string{"n1"}, Expires: time.Now().Add(time.Minute).UnixMilli()})
	for range 2 {
		if err := c.Publish(ctx, tp.NodeCmd("n1"), cmd, false); err != nil {
			t.Fatal(err)
		}
	}
	seq := uint64(time.Now().UnixMilli())
	newer := seal(&proto.Gate{Group: "web", Rollout: "r-gates", OpenWave: 2, State: proto.GateRunning, Seq: seq + 5})
	older := seal(&proto.Gate{Group: "web", Rollout: "r-gates", OpenWave: 1, State: proto.GateRunning, Seq: seq})
	for _, g := range [][]byte{newer, newer, older} {
		if err := c.Publish(ctx, tp.GroupGate("web"), g, false); err != nil {
			t.Fatal(err)
		}
	}
	stale := func() int {
		k := 0
		for _, ev := range f.Watch().Events("n1") {
			if ev.State == proto.StateRejected && strings.Contains(ev.Detail, "gate of web: replayed or stale") {
				k++
			}
		}
		return k
	}
	eventually(t, 10*time.Second, "the older gate refused", func() bool { return stale() == 1 })
	time.Sleep(time.Second) // a second reboot or rejection would show by now
	got, _ := os.ReadFile(reboots)
	if strings.Count(string(got), "reboot") != 1 {
		t.Errorf("the reboot command ran %d times for one command sent twice", strings.Count(string(got), "reboot"))
	}
	if k := stale(); k != 1 {
		t.Errorf("%d stale-gate rejections, want 1 (the duplicate of the newer gate must pass silently)", k)
	}
}

// A node whose disk fills up, then whose state directory turns
// read-only: each time it says why in its status, changes nothing, and
// works again once there is room (labd runs in its own mount namespace
// with a 256 KiB tmpfs as its state directory; the test reaches it
// through /proc/PID/root and nsenter).
func TestDiskFullAndReadOnlyStateDir(t *testing.T) {
	requireRoot(t, "unshare", "nsenter")
	f := newFleet(t, []string{"n1"}, nil)
	n := f.nodes[0]
	state := n.Dir + "/state"
	n.mounts = fmt.Sprintf("mount -t tmpfs -o size=256k lab-state %q", state)
	f.startAll()
	pid := n.cmd.Process.Pid
	inNode := func(p string) string { return fmt.Sprintf("/proc/%d/root%s", pid, p) }
	// Fill the disk.
	fill, err := os.Create(inNode(state + "/fill"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := fill.Write(make([]byte, 4096)); err != nil {
			break // ENOSPC
		}
	}
	fill.Close()
	if code, _ := f.publish("r-full", "--timeout", "60s"); code != exitFailed {
		t.Fatalf("publish on a full disk: exit %d, want %d", code, exitFailed)
	}
	s := f.Watch().AwaitState(t, "n1", "r-full", proto.StateFailed, 10*time.Second)
	if !strings.Contains(s.Execution.Error, "nothing was changed") || !strings.Contains(s.Execution.Error, "no space left") {
		t.Errorf("status error %q does not say the disk is full", s.Execution.Error)
	}
	if n.Current() != f.gen1["n1"] || len(n.Switches()) != 0 {
		t.Errorf("the node changed: profile %s switches %v", n.Current(), n.Switches())
	}
	eventually(t, 10*time.Second, "the problem in n1's status", func() bool {
		s, _ = f.Watch().Status("n1")
		return len(s.Problems) == 1 && strings.Contains(s.Problems[0], "no space left")
	})
	// Room again: the next rollout works and the problem clears.
	if err := os.Remove(inNode(state + "/fill")); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := f.Labctl("publish", "--id", "r-room", "--key", f.KeyFile, "--toplevel", "n1="+f.gen2["n1"], "--timeout", "60s"); code != exitSucceeded {
		t.Fatalf("publish after freeing the disk: exit %d", code)
	}
	eventually(t, 10*time.Second, "the problem cleared", func() bool {
		s, _ = f.Watch().Status("n1")
		return s.Execution.Rollout == "r-room" && len(s.Problems) == 0
	})
	// Read-only: remounted under the running labd.
	if out, err := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-m", "mount", "-o", "remount,ro", state).CombinedOutput(); err != nil {
		t.Fatalf("remount ro: %v\n%s", err, out)
	}
	if code, _, _ := f.Labctl("publish", "--id", "r-ro", "--key", f.KeyFile, "--toplevel", "n1="+f.gen1["n1"], "--timeout", "60s"); code != exitFailed {
		t.Fatalf("publish on a read-only state dir: exit %d, want %d", code, exitFailed)
	}
	s = f.Watch().AwaitState(t, "n1", "r-ro", proto.StateFailed, 10*time.Second)
	if !strings.Contains(s.Execution.Error, "read-only file system") || n.Current() != f.gen2["n1"] {
		t.Errorf("status error %q, profile %s (want unchanged on gen 2)", s.Execution.Error, n.Current())
	}
}
