package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// A reboot is simulated the way the machine would live it: labd's
// reboot_command drops a marker; the test then kills labd (SIGKILL, as
// the power going away would), gives the node a new boot id and starts
// labd again. On NixOS the command is `systemctl reboot` (the default).

func (n *Node) rebootMarker() string { return filepath.Join(n.Dir, "reboot-requested") }

func (n *Node) rebootRequested() bool {
	_, err := os.Stat(n.rebootMarker())
	return err == nil
}

// reboot completes a requested reboot.
func (n *Node) reboot(boot int) {
	n.env.t.Helper()
	n.Kill()
	if err := os.Remove(n.rebootMarker()); err != nil {
		n.env.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.Dir, "boot_id"), []byte(fmt.Sprintf("boot-%d\n", boot)), 0o644); err != nil {
		n.env.t.Fatal(err)
	}
	n.Start()
}

// labctlAsync starts labctl against the env's broker without waiting.
func (e *Env) labctlAsync(out *strings.Builder, args ...string) *exec.Cmd {
	e.t.Helper()
	cmd := e.command(bin.labctl, args...)
	cmd.Env = append(append(cmd.Env, "LAB_BROKER="+e.BrokerURL()), e.labctlEnv()...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { stopProcess(cmd) })
	return cmd
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// labctl reboot goes in reboot order, one machine at a time: the next
// machine is asked only after the previous one came back healthy.
func TestOrderedReboot(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2", "n3"}, nil)
	order := map[string]int{"n3": 1, "n1": 2, "n2": 3}
	for _, n := range f.nodes {
		n.appendConfig(fmt.Sprintf("machine: {reboot_order: %d}\n", order[n.Name]))
	}
	f.startAll()
	eventually(t, 10*time.Second, "reboot orders in status", func() bool {
		s, ok := f.Watch().Status("n2")
		return ok && s.Machine.RebootOrder == 3
	})
	var out strings.Builder
	cmd := f.labctlAsync(&out, "reboot", "--on", "@web", "--key", f.KeyFile, "--deadline", "60s")
	byName := map[string]*Node{}
	for _, n := range f.nodes {
		byName[n.Name] = n
	}
	for i, name := range []string{"n3", "n1", "n2"} {
		n := byName[name]
		eventually(t, 30*time.Second, name+" asked to reboot", n.rebootRequested)
		for _, other := range f.nodes {
			if other != n && other.rebootRequested() {
				t.Fatalf("%s asked to reboot while %s reboots", other.Name, name)
			}
		}
		n.reboot(2 + i)
	}
	if code := exitCode(cmd.Wait()); code != 0 {
		t.Fatalf("labctl reboot exit %d\n%s", code, out.String())
	}
	if c := strings.Count(out.String(), "rebooted"); c < 3 {
		t.Errorf("not every machine reported rebooted:\n%s", out.String())
	}
}

// A machine that comes back unhealthy stops the sequence: the rest are
// skipped and labctl reboot exits 3.
func TestRebootStopsAtAnUnhealthyMachine(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2"}, nil)
	// n1 breaks during the reboot: its second check fails afterwards.
	broken := filepath.Join(f.nodes[0].Dir, "broken")
	f.nodes[0].appendConfig(fmt.Sprintf("  - {name: after-boot, type: command, command: [test, \"!\", -e, %q], retries: -1}\n", broken))
	f.startAll()
	var out strings.Builder
	cmd := f.labctlAsync(&out, "reboot", "--on", "n1,n2", "--key", f.KeyFile, "--deadline", "60s")
	eventually(t, 30*time.Second, "n1 asked to reboot", f.nodes[0].rebootRequested)
	if err := os.WriteFile(broken, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f.nodes[0].reboot(2)
	if code := exitCode(cmd.Wait()); code != 3 {
		t.Fatalf("labctl reboot exit %d, want 3\n%s", code, out.String())
	}
	if f.nodes[1].rebootRequested() {
		t.Error("n2 was asked to reboot after n1 came back unhealthy")
	}
	if !strings.Contains(out.String(), "skipped") {
		t.Errorf("output does not say n2 was skipped:\n%s", out.String())
	}
}

// --action boot: the node sets the boot entry, reboots, and confirms the
// new system's health after the reboot; when it is unhealthy it restores
// the previous boot entry and reboots once more.
func TestBootActionConfirmsAfterReboot(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2"}, map[string][]string{"n2": {"--arg", "failHealth", "true"}})
	f.startAll()
	var out strings.Builder
	args := []string{"publish", "--id", "r-boot", "--key", f.KeyFile, "--action", "boot", "--timeout", "120s"}
	for _, n := range f.nodes {
		args = append(args, "--toplevel", n.Name+"="+f.gen2[n.Name])
	}
	cmd := f.labctlAsync(&out, args...)
	for _, n := range f.nodes {
		eventually(t, 30*time.Second, n.Name+" reboots into gen 2", n.rebootRequested)
		f.Watch().AwaitState(t, n.Name, "r-boot", proto.StateRebooting, 10*time.Second)
		n.reboot(2)
	}
	f.Watch().AwaitState(t, "n1", "r-boot", proto.StateSucceeded, 30*time.Second)
	// n2 is unhealthy after the reboot: boot entry back, one more reboot.
	bad := f.nodes[1]
	eventually(t, 30*time.Second, "n2 reboots into gen 1 again", bad.rebootRequested)
	bad.reboot(3)
	f.Watch().AwaitState(t, "n2", "r-boot", proto.StateRolledBack, 30*time.Second)
	if code := exitCode(cmd.Wait()); code != exitRolledBack {
		t.Fatalf("publish exit %d, want %d\n%s", code, exitRolledBack, out.String())
	}
	if bad.Current() != f.gen1["n2"] {
		t.Errorf("n2 boot default %s, want gen 1", bad.Current())
	}
	if switched(bad, "boot", f.gen2["n2"]) != 1 || switched(bad, "boot", f.gen1["n2"]) != 1 {
		t.Errorf("n2 switch log: want boot gen 2 then boot gen 1, got %v", bad.Switches())
	}
	if switched(f.nodes[0], "boot", f.gen2["n1"]) != 1 || f.nodes[0].Current() != f.gen2["n1"] {
		t.Errorf("n1 switch log %v, current %s", f.nodes[0].Switches(), f.nodes[0].Current())
	}
}

// failReboots gives the node a reboot command that fails as systemctl
// does on a machine not booted with systemd.
func (n *Node) failReboots() {
	n.env.t.Helper()
	script := filepath.Join(n.Dir, "reboot.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"System has not been booted with systemd as init system (PID 1). Can't operate.\" >&2\nexit 1\n"), 0o755); err != nil {
		n.env.t.Fatal(err)
	}
	b, err := os.ReadFile(n.Config)
	if err != nil {
		n.env.t.Fatal(err)
	}
	cfg := strings.Replace(string(b), fmt.Sprintf("reboot_command: [touch, %q]", n.rebootMarker()), fmt.Sprintf("reboot_command: [%q]", script), 1)
	if err := os.WriteFile(n.Config, []byte(cfg), 0o644); err != nil {
		n.env.t.Fatal(err)
	}
}

// --action boot on a machine whose reboot command fails: the machine
// never booted the new system, and the node puts the old boot entry back
// at once (rolled-back, saying why) instead of waiting for its deadline.
func TestBootActionWhoseRebootFailsRollsBackAtOnce(t *testing.T) {
	f := newFleet(t, []string{"n1"}, nil)
	n := f.nodes[0]
	n.failReboots()
	f.startAll()
	f.DumpOnFailure(n)
	start := time.Now()
	code, out := f.publish("r-noboot", "--action", "boot", "--timeout", "120s")
	if code != exitRolledBack {
		t.Fatalf("publish exit %d, want %d\n%s", code, exitRolledBack, out)
	}
	if took := time.Since(start); took > 40*time.Second {
		t.Errorf("took %s: the node waited for its activate deadline (60 s)", took)
	}
	s := f.Watch().AwaitState(t, "n1", "r-noboot", proto.StateRolledBack, 10*time.Second)
	if !strings.Contains(s.Execution.Error, "did not reboot") || !strings.Contains(s.Execution.Error, "not been booted with systemd") {
		t.Errorf("error %q does not say the reboot command failed", s.Execution.Error)
	}
	if n.Current() != f.gen1["n1"] || switched(n, "boot", f.gen2["n1"]) != 1 || switched(n, "boot", f.gen1["n1"]) != 1 {
		t.Errorf("profile %s, switches %v: want boot gen 2, then boot gen 1 again", n.Current(), n.Switches())
	}
}

// A reboot command that fails on the node (here it fails as systemctl
// does on a machine not booted with systemd) is reported by labctl reboot
// within seconds, with the node's reason — not as "timed-out" after the
// deadline — and the sequence stops: the next machine is not asked.
func TestRebootCommandFailureIsReportedAtOnce(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2"}, nil)
	f.nodes[0].failReboots()
	f.startAll()
	f.DumpOnFailure(f.nodes...)
	start := time.Now()
	code, out, errOut := f.Labctl("reboot", "--on", "n1,n2", "--key", f.KeyFile, "--deadline", "120s")
	took := time.Since(start)
	t.Logf("labctl reboot took %s", took.Round(100*time.Millisecond))
	if code != 3 {
		t.Fatalf("labctl reboot exit %d, want 3\n%s%s", code, out, errOut)
	}
	if took > 10*time.Second {
		t.Errorf("labctl reboot took %s: it waited for the deadline", took)
	}
	if !strings.Contains(out, "failed") || !strings.Contains(out, "not been booted with systemd") || strings.Contains(out, "timed-out") {
		t.Errorf("output does not report n1's failed reboot command with its reason:\n%s", out)
	}
	if !strings.Contains(out, "skipped") || f.nodes[1].rebootRequested() {
		t.Errorf("n2 was not skipped:\n%s", out)
	}
	// The node says so on its events topic, as an acknowledgement of the command.
	eventually(t, 10*time.Second, "n1's failed acknowledgement", func() bool {
		for _, ev := range f.Watch().Events("n1") {
			if ev.Op == proto.OpReboot && ev.Outcome == proto.CmdFailed && ev.Cmd != "" {
				return true
			}
		}
		return false
	})
}

// A node that is busy with a rollout refuses a reboot, and labctl reboot
// says so at once.
func TestRebootRefusedWhileActivating(t *testing.T) {
	f := newFleet(t, []string{"n1"}, map[string][]string{"n1": {"--arg", "sleepSwitch", "20"}})
	f.startAll()
	f.DumpOnFailure(f.nodes...)
	if code, _ := f.publish("r-busy", "--no-wait"); code != 0 {
		t.Fatalf("publish --no-wait exit %d", code)
	}
	f.Watch().AwaitState(t, "n1", "r-busy", proto.StateActivating, 30*time.Second)
	start := time.Now()
	code, out, errOut := f.Labctl("reboot", "--on", "n1", "--key", f.KeyFile, "--deadline", "120s")
	if code != 3 || !regexp.MustCompile(`(?m)^n1\s+refused\s`).MatchString(out) || !strings.Contains(out, "the node is activating") {
		t.Fatalf("labctl reboot exit %d, want 3 reporting the refusal\n%s%s", code, out, errOut)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("labctl reboot took %s", took)
	}
	if f.nodes[0].rebootRequested() {
		t.Error("the busy node rebooted")
	}
}
