package hook

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var env = Env{Rollout: "r-1", Gen: 42, Toplevel: "/nix/store/new", Previous: "/nix/store/old", Action: "switch"}

func TestRunStopsAtTheFirstFailure(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	hooks := []Hook{
		{Command: []string{"sh", "-c", "echo first"}, Timeout: 5 * time.Second},
		{Command: []string{"sh", "-c", "echo to stdout; echo db is locked >&2; exit 3"}, Timeout: 5 * time.Second},
		{Command: []string{"touch", marker}, Timeout: 5 * time.Second},
	}
	res, ok := Run(context.Background(), PreActivate, hooks, env, true)
	if ok || len(res) != 2 {
		t.Fatalf("ok %v, %d results, want a failure after 2", ok, len(res))
	}
	if !res[0].OK() || res[0].Output != "first" {
		t.Errorf("first hook: %+v", res[0])
	}
	r := res[1]
	if r.OK() || r.TimedOut || r.Index != 1 || !strings.Contains(r.Output, "to stdout\ndb is locked") {
		t.Errorf("second hook: %+v", r)
	}
	if s := r.String(); !strings.HasPrefix(s, "pre_activate[1] [sh -c") || !strings.Contains(s, "exit status 3: to stdout") {
		t.Errorf("String() = %q", s)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the hook after the failing one ran")
	}
	// Without stop, every hook runs.
	res, ok = Run(context.Background(), PreRollback, hooks, env, false)
	if ok || len(res) != 3 || !res[2].OK() {
		t.Errorf("without stop: ok %v, %+v", ok, res)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Error("the hook after the failing one did not run")
	}
}

// The environment is PATH, LAB_HOOK and the execution's facts: nothing
// else of labd's.
func TestRunEnvironment(t *testing.T) {
	t.Setenv("LAB_SECRET_OF_LABD", "x")
	res, ok := Run(context.Background(), PostActivate, []Hook{{Command: []string{"env"}, Timeout: 5 * time.Second}}, env, true)
	if !ok {
		t.Fatalf("%v", res)
	}
	got := strings.Split(res[0].Output, "\n")
	slices.Sort(got)
	want := []string{"LAB_ACTION=switch", "LAB_GEN=42", "LAB_HOOK=post_activate", "LAB_PREVIOUS=/nix/store/old",
		"LAB_ROLLOUT=r-1", "LAB_TOPLEVEL=/nix/store/new", "PATH=" + os.Getenv("PATH")}
	if !slices.Equal(got, want) {
		t.Errorf("environment\n%q\nwant\n%q", got, want)
	}
}

// At its timeout the hook's whole process group is killed — a shell's
// sleeping child too, which would otherwise hold the output open — and
// the result says so.
func TestRunKillsAtTheTimeout(t *testing.T) {
	start := time.Now()
	res, ok := Run(context.Background(), PreActivate, []Hook{{Command: []string{"sh", "-c", "echo waiting; sleep 30; echo never"}, Timeout: 300 * time.Millisecond}}, env, true)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s: the sleeping child was not killed", took)
	}
	if ok || !res[0].TimedOut || !strings.Contains(res[0].String(), "killed at its timeout of 300ms: waiting") {
		t.Errorf("ok %v, %+v: %s", ok, res[0], res[0].String())
	}
}

func TestRunKeepsTheOutputTail(t *testing.T) {
	res, _ := Run(context.Background(), PreActivate, []Hook{{Command: []string{"sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done; exit 1"}, Timeout: 5 * time.Second}}, env, true)
	out := res[0].Output
	if !strings.HasPrefix(out, "…") || !strings.HasSuffix(out, "line 1999") || len(out) > OutputTail+len("…") {
		t.Errorf("output %d bytes: %.40q … %q", len(out), out, out[max(0, len(out)-20):])
	}
}

func TestRunMissingCommand(t *testing.T) {
	res, ok := Run(context.Background(), PreActivate, []Hook{{Command: []string{"/nonexistent/hook"}, Timeout: time.Second}}, env, true)
	if ok || !strings.Contains(res[0].String(), "no such file") {
		t.Errorf("ok %v, %s", ok, res[0].String())
	}
}

func TestValidate(t *testing.T) {
	s := Set{
		PreActivate:  []Hook{{Command: []string{"/bin/true"}}, {}},
		PostActivate: []Hook{{Command: []string{"systemctl restart foo"}}},
		PreRollback:  []Hook{{Command: []string{"/bin/true"}, Timeout: -time.Second}},
		PostRollback: []Hook{{Command: []string{"/bin/sh", "-c", "echo a b"}, Timeout: 2 * time.Minute}},
	}
	var got []string
	s.Validate(func(key, problem string) { got = append(got, key+": "+problem) })
	want := []string{"hooks.pre_activate[1].command: empty", "hooks.post_activate[0].command: \"systemctl restart foo\" is one argv element",
		"hooks.pre_rollback[0].timeout: negative duration -1s"}
	if len(got) != len(want) {
		t.Fatalf("problems %q, want %q", got, want)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("problem %q, want %q…", got[i], want[i])
		}
	}
	if s.PreActivate[0].Timeout != DefaultTimeout || s.PostRollback[0].Timeout != 2*time.Minute {
		t.Errorf("timeouts %s %s", s.PreActivate[0].Timeout, s.PostRollback[0].Timeout)
	}
}
