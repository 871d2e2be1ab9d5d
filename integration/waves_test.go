package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// A canary that fails its health check rolls back and halts the rollout:
// the other nodes never switch, they report cancelled (their group's gate
// says so), and publish exits 4.
func TestCanaryFailureHaltsBeforeWave2(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2", "n3"}, map[string][]string{"n1": {"--arg", "failHealth", "true"}})
	f.startAll()
	code, out := f.publish("r-canary", "--strategy", "canary", "--timeout", "90s")
	if code != exitRolledBack {
		t.Fatalf("publish exit %d, want %d (rolled back)", code, exitRolledBack)
	}
	f.Watch().AwaitState(t, "n1", "r-canary", proto.StateRolledBack, 10*time.Second)
	for _, n := range f.nodes[1:] {
		f.Watch().AwaitState(t, n.Name, "r-canary", proto.StateCancelled, 10*time.Second)
		if len(n.Switches()) != 0 {
			t.Errorf("%s switched although the canary failed: %v", n.Name, n.Switches())
		}
		if n.Current() != f.gen1[n.Name] {
			t.Errorf("%s left generation 1", n.Name)
		}
	}
	for _, want := range []string{"halted", "n2: cancelled", "n3: cancelled"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

// Rolling batches of one: each node switches only after the one before it
// finished, and a tolerated failure (--max-failures 1) does not stop it.
func TestRollingInOrderWithToleratedFailure(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2", "n3"}, map[string][]string{"n2": {"--arg", "failHealth", "true"}})
	f.startAll()
	code, _ := f.publish("r-roll", "--strategy", "rolling", "--batch", "1", "--max-failures", "1", "--timeout", "90s")
	if code != exitRolledBack {
		t.Fatalf("publish exit %d, want %d", code, exitRolledBack)
	}
	s1 := f.Watch().AwaitState(t, "n1", "r-roll", proto.StateSucceeded, 10*time.Second)
	s2 := f.Watch().AwaitState(t, "n2", "r-roll", proto.StateRolledBack, 10*time.Second)
	s3 := f.Watch().AwaitState(t, "n3", "r-roll", proto.StateSucceeded, 10*time.Second)
	// Each wave starts after the previous one ended: the fetching event
	// of the next node comes after the terminal event of the one before.
	start := func(node string) int64 {
		for _, ev := range f.Watch().Events(node) {
			if ev.Rollout == "r-roll" && ev.State == proto.StateFetching {
				return ev.TS
			}
		}
		t.Fatalf("%s: no fetching event", node)
		return 0
	}
	if start("n2") < s1.Execution.Since || start("n3") < s2.Execution.Since {
		t.Errorf("waves overlapped: n1 done %d, n2 started %d, n2 done %d, n3 started %d",
			s1.Execution.Since, start("n2"), s2.Execution.Since, start("n3"))
	}
	if s3.AppliedGen != s3.Execution.Gen {
		t.Errorf("n3 did not apply its generation: %+v", s3)
	}
}

// A percentage threshold counts once --min-executed targets finished:
// one failure in two does not halt, two in three (67% > 40%) does.
func TestPercentageThresholdHalts(t *testing.T) {
	bad := []string{"--arg", "failHealth", "true"}
	f := newFleet(t, []string{"n1", "n2", "n3", "n4", "n5"}, map[string][]string{"n1": bad, "n3": bad})
	f.startAll()
	code, out := f.publish("r-pct", "--strategy", "rolling", "--batch", "1", "--max-failures", "40%", "--min-executed", "3", "--timeout", "120s")
	if code != exitRolledBack {
		t.Fatalf("publish exit %d, want %d", code, exitRolledBack)
	}
	f.Watch().AwaitState(t, "n2", "r-pct", proto.StateSucceeded, 10*time.Second)
	for _, n := range f.nodes[3:] {
		f.Watch().AwaitState(t, n.Name, "r-pct", proto.StateCancelled, 10*time.Second)
		if len(n.Switches()) != 0 {
			t.Errorf("%s switched after the halt", n.Name)
		}
	}
	if !strings.Contains(out, "halted: 2 of 3 finished targets failed") {
		t.Errorf("summary does not say why it halted:\n%s", out)
	}
}

// A node that exceeds the rollout's activation deadline is timed-out: it
// rolls itself back (after the running switch ends) and counts as a
// failure, so publish exits 3.
func TestActivationDeadlineTimesOut(t *testing.T) {
	f := newFleet(t, []string{"n1"}, map[string][]string{"n1": {"--arg", "sleepSwitch", "5"}})
	f.startAll()
	code, out := f.publish("r-slow", "--activate-timeout", "1s", "--timeout", "90s")
	if code != exitFailed {
		t.Fatalf("publish exit %d, want %d\n%s", code, exitFailed, out)
	}
	s := f.Watch().AwaitState(t, "n1", "r-slow", proto.StateTimedOut, 10*time.Second)
	if !strings.Contains(s.Execution.Error, "activating timed out") {
		t.Errorf("error %q does not say what timed out", s.Execution.Error)
	}
	if f.nodes[0].Current() != f.gen1["n1"] {
		t.Errorf("n1 not back on gen 1: %s", f.nodes[0].Current())
	}
}

// --on-failure rollback: when the rollout halts, the nodes that already
// switched go back to the system they ran before.
func TestOnFailureRollbackSwitchesBack(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2", "n3"}, map[string][]string{"n2": {"--arg", "failHealth", "true"}})
	f.startAll()
	rollsBackWhatSwitched(t, f, "r-undo")
}

// rollsBackWhatSwitched publishes a rolling rollout of batch 1 with
// --on-failure rollback to n1…n3, whose n2 fails its health check: n1
// goes back to gen 1, n2 rolls itself back, n3 never switches, and
// publish's summary shows the way back. It returns publish's output.
func rollsBackWhatSwitched(t *testing.T, f *fleet, id string) string {
	t.Helper()
	code, out := f.publish(id, "--strategy", "rolling", "--batch", "1", "--on-failure", "rollback", "--timeout", "120s")
	if code != exitRolledBack {
		t.Fatalf("publish exit %d, want %d\n%s", code, exitRolledBack, out)
	}
	f.Watch().AwaitState(t, "n1", id+"-rollback", proto.StateSucceeded, 30*time.Second)
	if f.nodes[0].Current() != f.gen1["n1"] {
		t.Errorf("n1 not switched back to gen 1: %s", f.nodes[0].Current())
	}
	if f.nodes[1].Current() != f.gen1["n2"] || len(f.nodes[2].Switches()) != 0 {
		t.Errorf("n2 at %s, n3 switches %v", f.nodes[1].Current(), f.nodes[2].Switches())
	}
	if !strings.Contains(out, "switching the targets that succeeded back") || !strings.Contains(out, id+"-rollback") {
		t.Errorf("summary does not show the way back:\n%s", out)
	}
	return out
}
