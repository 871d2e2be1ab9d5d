package integration

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// A node asleep during the rollout: its wave moves on after the wave
// deadline, publish ends "pending" (exit 5); when the node wakes it
// converges, and `labctl rollout show` then reports the rollout succeeded.
func TestRolloutShowSeesALateNodeConverge(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2", "n3"}, nil)
	for _, n := range f.nodes[:2] {
		n.Start()
		f.awaitOnline(n)
	}
	code, _ := f.publish("r-late", "--wave-deadline", "3s", "--allow-unseen") // n3 never connected yet
	if code != exitPending {
		t.Fatalf("publish exit %d, want %d (pending)", code, exitPending)
	}
	if st := f.recordState("r-late"); st != "pending" {
		t.Fatalf("record of a rollout with n3 asleep: %s, want pending", st)
	}
	code, out, _ := f.Labctl("rollout", "show", "r-late")
	if code != exitPending || !strings.Contains(out, "n3") {
		t.Fatalf("rollout show before n3 wakes: exit %d\n%s", code, out)
	}
	f.nodes[2].Start()
	f.Watch().AwaitState(t, "n3", "r-late", proto.StateSucceeded, 60*time.Second)
	code, out, _ = f.Labctl("rollout", "show", "r-late")
	if code != exitSucceeded || !strings.Contains(out, "3 succeeded") {
		t.Fatalf("rollout show after n3 converged: exit %d, want 0\n%s", code, out)
	}
	// The record was pending; show recorded the outcome once n3 converged.
	if st := f.recordState("r-late"); st != "succeeded" {
		t.Fatalf("record after rollout show: %s, want succeeded", st)
	}
}

// labctl publish killed in the middle of a rolling rollout: `labctl
// rollout resume` finishes it; every node switches exactly once.
func TestResumeAfterKillingPublish(t *testing.T) {
	slow := []string{"--arg", "sleepSwitch", "2"}
	f := newFleet(t, []string{"n1", "n2", "n3"}, map[string][]string{"n1": slow, "n2": slow, "n3": slow})
	f.startAll()
	args := []string{"publish", "--id", "r-kill", "--key", f.KeyFile, "--strategy", "rolling", "--batch", "1"}
	for _, n := range f.nodes {
		args = append(args, "--toplevel", n.Name+"="+f.gen2[n.Name])
	}
	var out0 strings.Builder
	cmd := f.labctlAsync(&out0, args...)
	// Kill it once the second wave runs.
	f.Watch().AwaitState(t, "n2", "r-kill", proto.StateActivating, 60*time.Second)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	code, out, errOut := f.Labctl("rollout", "resume", "r-kill", "--key", f.KeyFile)
	if code != exitSucceeded {
		t.Fatalf("resume exit %d, want 0\n%s%s", code, out, errOut)
	}
	for _, n := range f.nodes {
		f.Watch().AwaitState(t, n.Name, "r-kill", proto.StateSucceeded, 10*time.Second)
		if c := switched(n, "switch", f.gen2[n.Name]); c != 1 {
			t.Errorf("%s switched to gen 2 %d times: %v", n.Name, c, n.Switches())
		}
	}
	if code, _, errOut := f.Labctl("rollout", "resume", "r-kill"); code == 0 || !strings.Contains(errOut, "already ended") {
		t.Errorf("resuming a finished rollout: exit %d\n%s", code, errOut)
	}
}

// labctl rollout cancel while the first wave activates: that node
// finishes (a node refuses a cancel once its profile may have moved), the
// others never start, and the publish following it stops with exit 6.
func TestCancelDuringARollout(t *testing.T) {
	slow := []string{"--arg", "sleepSwitch", "3"}
	f := newFleet(t, []string{"n1", "n2", "n3"}, map[string][]string{"n1": slow})
	f.startAll()
	args := []string{"publish", "--id", "r-cancel", "--key", f.KeyFile, "--strategy", "rolling", "--batch", "1"}
	for _, n := range f.nodes {
		args = append(args, "--toplevel", n.Name+"="+f.gen2[n.Name])
	}
	var out strings.Builder
	cmd := f.labctlAsync(&out, args...)
	f.Watch().AwaitState(t, "n1", "r-cancel", proto.StateActivating, 30*time.Second)
	if code, o, e := f.Labctl("rollout", "cancel", "r-cancel", "--key", f.KeyFile); code != 0 {
		t.Fatalf("cancel exit %d\n%s%s", code, o, e)
	}
	if code := exitCode(cmd.Wait()); code != 6 {
		t.Fatalf("publish exit %d, want 6 (cancelled)\n%s", code, out.String())
	}
	f.Watch().AwaitState(t, "n1", "r-cancel", proto.StateSucceeded, 30*time.Second)
	for _, n := range f.nodes[1:] {
		if len(n.Switches()) != 0 {
			t.Errorf("%s switched after the cancel", n.Name)
		}
	}
	// Woken later, n2 finds nothing to do: its Desired was cleared.
	f.nodes[1].Stop()
	restarted := time.Now().UnixMilli()
	f.nodes[1].Start()
	eventually(t, 30*time.Second, "n2's status after its restart", func() bool {
		s, ok := f.Watch().Status("n2")
		return ok && s.UpdatedAt >= restarted && f.Watch().Online("n2")
	})
	if s, _ := f.Watch().Status("n2"); s.Execution.State != proto.StateCancelled || len(f.nodes[1].Switches()) != 0 {
		t.Errorf("n2 after restarting: %s, switches %v", s.Execution.State, f.nodes[1].Switches())
	}
	if code, o, _ := f.Labctl("rollout", "show", "r-cancel"); code != 6 || !strings.Contains(o, "cancelled") {
		t.Errorf("rollout show: exit %d\n%s", code, o)
	}
}
