package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// TestPostActivateHookRollsBack: real labd, real Nix. The machine's
// post_activate hook fails after the switch to gen 2: that counts as a
// failed health check, and the machine rolls itself back to gen 1; the
// rollback hooks run around the rollback; the hook's output is in the
// execution's error and events.
func TestPostActivateHookRollsBack(t *testing.T) {
	requireTools(t, "nix-build")
	f := newFleet(t, []string{"n1"}, nil)
	n1 := f.nodes[0]
	log := filepath.Join(n1.Dir, "hooks.log")
	record := func(phase string) string {
		return fmt.Sprintf(`{command: [sh, -c, 'echo "%s $LAB_HOOK $LAB_ACTION $LAB_TOPLEVEL $LAB_PREVIOUS" >> %s'], timeout: 10s}`, phase, log)
	}
	hooks := fmt.Sprintf(`hooks:
  pre_activate: [%s]
  post_activate:
    - %s
    - {command: [sh, -c, 'echo "migrating $LAB_ROLLOUT"; echo "migration 7 failed: no such table" >&2; exit 1'], timeout: 10s}
  pre_rollback: [%s]
  post_rollback: [%s]
`, record("pre"), record("post"), record("pre-rb"), record("post-rb"))
	cfg, err := os.OpenFile(n1.Config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.WriteString(hooks); err != nil {
		t.Fatal(err)
	}
	cfg.Close()
	f.startAll()

	if code, out := f.publish("r-hooks", "--timeout", "60s"); code != exitRolledBack {
		t.Fatalf("publish exit %d, want %d (rolled back)\n%s", code, exitRolledBack, out)
	}
	s := f.Watch().AwaitState(t, "n1", "r-hooks", proto.StateRolledBack, 10*time.Second)
	if !strings.Contains(s.Execution.Error, "post_activate hook failed (counted as a failed health check): post_activate[1]") ||
		!strings.Contains(s.Execution.Error, "migrating r-hooks\nmigration 7 failed: no such table") {
		t.Errorf("execution error %q", s.Execution.Error)
	}
	if n1.Current() != f.gen1["n1"] {
		t.Errorf("profile at %s, want gen 1 %s", n1.Current(), f.gen1["n1"])
	}
	if switched(n1, "switch", f.gen2["n1"]) != 1 || switched(n1, "switch", f.gen1["n1"]) != 1 {
		t.Errorf("switches %v: want gen 2 once, then gen 1 once", n1.Switches())
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	facts := " switch " + f.gen2["n1"] + " " + f.gen1["n1"]
	want := "pre pre_activate" + facts + "\npost post_activate" + facts + "\npre-rb pre_rollback" + facts + "\npost-rb post_rollback" + facts + "\n"
	if string(b) != want {
		t.Errorf("the hooks ran\n%s\nwant\n%s", b, want)
	}
	var seen bool
	for _, e := range f.Watch().Events("n1") {
		if e.Rollout == "r-hooks" && e.State == proto.StateRollingBack && strings.Contains(e.Detail, "no such table") {
			seen = true
		}
	}
	if !seen {
		t.Errorf("no rolling-back event with the hook's output: %+v", f.Watch().Events("n1"))
	}
}
