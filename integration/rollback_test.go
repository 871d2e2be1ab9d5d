package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// TestRollbackCommand: labctl rollback sends a machine back to the system
// it ran before its last switch, as a signed rollout, and refuses a
// machine that already runs its previous system, naming it, before
// anything is published.
func TestRollbackCommand(t *testing.T) {
	requireTools(t, "nix-build")
	f := newFleet(t, []string{"n1", "n2"}, map[string][]string{"n2": {"--arg", "failHealth", "true"}})
	f.startAll()
	if code, out := f.publish("r-up", "--timeout", "90s"); code != exitRolledBack {
		t.Fatalf("publish exit %d, want %d (n2 rolls back)\n%s", code, exitRolledBack, out)
	}
	f.Watch().AwaitState(t, "n1", "r-up", proto.StateSucceeded, 10*time.Second)
	f.Watch().AwaitState(t, "n2", "r-up", proto.StateRolledBack, 10*time.Second)

	code, out, errOut := f.Labctl("rollback", "--on", "@web", "--key", f.KeyFile, "--id", "r-refused", "--timeout", "90s")
	if code != 2 || !strings.Contains(errOut, "n2: it already runs its previous system") || strings.Contains(errOut, "n1:") {
		t.Fatalf("rollback of a group with a rolled-back machine: exit %d, want 2 naming n2 only\n%s%s", code, out, errOut)
	}
	if _, ok := f.Watch().Rollout("r-refused"); ok {
		t.Error("the refused rollback was published")
	}

	code, out, errOut = f.Labctl("rollback", "--on", "n1", "--key", f.KeyFile, "--id", "r-back", "--timeout", "90s")
	if code != exitSucceeded {
		t.Fatalf("rollback exit %d, want %d\n%s%s", code, exitSucceeded, out, errOut)
	}
	s := f.Watch().AwaitState(t, "n1", "r-back", proto.StateSucceeded, 10*time.Second)
	n1 := f.nodes[0]
	if n1.Current() != f.gen1["n1"] || s.Current != f.gen1["n1"] || s.Previous != f.gen2["n1"] {
		t.Errorf("n1 after rollback: profile %s, status current %s previous %s; want current %s previous %s",
			n1.Current(), s.Current, s.Previous, f.gen1["n1"], f.gen2["n1"])
	}
	if c := switched(n1, "switch", f.gen1["n1"]); c != 1 {
		t.Errorf("n1 switched back to gen 1 %d times, want 1: %v", c, n1.Switches())
	}
	if !strings.Contains(out, "n1") || !strings.Contains(out, "succeeded") {
		t.Errorf("the rollback's summary does not show n1 succeeded:\n%s", out)
	}
	if rs, ok := f.Watch().Rollout("r-back"); !ok || len(rs.Nodes) != 1 {
		t.Errorf("rollout r-back: %+v (seen %v), want n1 alone", rs, ok)
	}
}
