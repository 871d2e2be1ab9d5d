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
	code, _ := f.publish("r-late", "--wave-deadline", "3s")
	if code != exitPending {
		t.Fatalf("publish exit %d, want %d (pending)", code, exitPending)
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
	code, out, _ = f.Labctl("rollout", "list")
	if code != 0 || !strings.Contains(out, "r-late") {
		t.Fatalf("rollout list: exit %d\n%s", code, out)
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
	cmd := f.command(bin.labctl, args...)
	cmd.Env = append(cmd.Env, "LAB_BROKER_URL="+f.BrokerURL())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
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
