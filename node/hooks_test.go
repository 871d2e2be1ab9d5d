package node

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/testbroker"
	"github.com/lab-fleet/lab/node/hook"
	"github.com/lab-fleet/lab/node/nixsys/nixsystest"
	"github.com/lab-fleet/lab/proto"
)

// hookNode runs n1 (fake Nix, on tlOld) with hooks; events returns the
// events it published so far.
func hookNode(t *testing.T, fake *nixsystest.Fake, hooks hook.Set, prepare func(string), edit func(*Config)) (br *testbroker.Broker, key proto.PrivateKey, statuses chan proto.NodeStatus, events func() []proto.Event) {
	t.Helper()
	key, err := proto.GenerateKey("test")
	if err != nil {
		t.Fatal(err)
	}
	br, statuses, _ = testNodeWith(t, fake, key, prepare, func(c *Config) {
		c.Hooks = hooks
		if edit != nil {
			edit(c)
		}
	})
	return br, key, statuses, watchEvents(t, br)
}

// watchEvents subscribes to n1's events.
func watchEvents(t *testing.T, br *testbroker.Broker) func() []proto.Event {
	t.Helper()
	var mu sync.Mutex
	var got []proto.Event
	listen(t, br, "events", func(m bus.Message) {
		var e proto.Event
		if proto.Decode(m.Payload, &e) == nil {
			mu.Lock()
			got = append(got, e)
			mu.Unlock()
		}
	}, proto.DefaultTopics.NodeEvents("n1"))
	return func() []proto.Event {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// awaitEvent waits for an event into state to whose detail contains want.
func awaitEvent(t *testing.T, events func() []proto.Event, to proto.ExecState, want string) proto.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range events() {
			if e.State == to && strings.Contains(e.Detail, want) {
				return e
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s event saying %q; events: %+v", to, want, events())
	return proto.Event{}
}

func sh(script string, timeout time.Duration) hook.Hook {
	return hook.Hook{Command: []string{"sh", "-c", script}, Timeout: timeout}
}

// A failing pre_activate hook: failed, with the hook and its output's
// tail in the error and the event; the profile never moved, no switch.
func TestPreActivateHookFailsAndNothingChanges(t *testing.T) {
	fake := nixsystest.New()
	br, key, statuses, events := hookNode(t, fake, hook.Set{PreActivate: []hook.Hook{
		sh("echo first passes", 5*time.Second),
		sh("echo checking the database; echo db is locked >&2; exit 3", 5*time.Second),
	}}, nil, nil)
	publishDesired(t, br, key, "r-1", tlNew)
	s := awaitExec(t, statuses, "r-1", 10*time.Second)
	if s.Execution.State != proto.StateFailed || !strings.Contains(s.Execution.Error, "pre_activate hook failed, so nothing was changed: pre_activate[1] [sh -c") ||
		!strings.Contains(s.Execution.Error, "exit status 3: checking the database\ndb is locked") {
		t.Errorf("execution %s %q", s.Execution.State, s.Execution.Error)
	}
	awaitEvent(t, events, proto.StateFailed, "db is locked")
	if calls := fake.Calls(); !slices.Equal(calls, []string{"realise " + tlNew}) {
		t.Errorf("calls %q: want only the fetch", calls)
	}
	if cur, _ := fake.Current(); cur != tlOld {
		t.Errorf("profile on %s, want the old system", cur)
	}
}

// A failing post_activate hook counts as a failed health check: rolled
// back. The rollback hooks run around the rollback; one that fails is
// reported and does not stop it. Every hook gets the execution's facts.
func TestPostActivateHookFailsAndRollsBack(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "hooks.log")
	record := func(phase string) hook.Hook {
		return sh(`echo "`+phase+` $LAB_HOOK $LAB_ROLLOUT $LAB_GEN $LAB_ACTION $LAB_TOPLEVEL $LAB_PREVIOUS" >> `+log, 5*time.Second)
	}
	fake := nixsystest.New()
	br, key, statuses, events := hookNode(t, fake, hook.Set{
		PreActivate:  []hook.Hook{record("pre")},
		PostActivate: []hook.Hook{record("post"), sh("echo migration 7 failed: no such table; exit 1", 5*time.Second)},
		PreRollback:  []hook.Hook{sh("echo cannot drain; exit 2", 5*time.Second), record("pre-rb")},
		PostRollback: []hook.Hook{record("post-rb")},
	}, nil, nil)
	publishDesired(t, br, key, "r-1", tlNew)
	s := awaitExec(t, statuses, "r-1", 10*time.Second)
	if s.Execution.State != proto.StateRolledBack || !strings.Contains(s.Execution.Error, "post_activate hook failed (counted as a failed health check): post_activate[1]") ||
		!strings.Contains(s.Execution.Error, "no such table") {
		t.Errorf("execution %s %q", s.Execution.State, s.Execution.Error)
	}
	awaitEvent(t, events, proto.StateActivating, "pre_activate hooks passed")
	awaitEvent(t, events, proto.StateRollingBack, "migration 7 failed: no such table")
	final := awaitEvent(t, events, proto.StateRolledBack, "pre_rollback hooks failed (the rollback went on)")
	if !strings.Contains(final.Detail, "exit status 2: cannot drain") || !strings.Contains(final.Detail, "post_rollback hooks passed") {
		t.Errorf("rolled-back event %q", final.Detail)
	}
	if cur, _ := fake.Current(); cur != tlOld {
		t.Errorf("profile on %s, want the old system", cur)
	}
	want := []string{"realise " + tlNew, "check switch " + tlNew, "set-profile " + tlNew, "activate switch " + tlNew, "set-profile " + tlOld, "activate switch " + tlOld}
	var calls []string
	for _, c := range fake.Calls() {
		if !strings.HasPrefix(c, "resume ") {
			calls = append(calls, c)
		}
	}
	if !slices.Equal(calls, want) {
		t.Errorf("calls %q, want %q", calls, want)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	gen := strconv.FormatUint(s.Execution.Gen, 10)
	facts := " r-1 " + gen + " switch " + tlNew + " " + tlOld
	wantLog := []string{"pre pre_activate" + facts, "post post_activate" + facts, "pre-rb pre_rollback" + facts, "post-rb post_rollback" + facts}
	if got := strings.Split(strings.TrimSpace(string(b)), "\n"); !slices.Equal(got, wantLog) {
		t.Errorf("the hooks ran with\n%q\nwant\n%q", got, wantLog)
	}
}

// A hook past its timeout is killed (its children too) and the failure
// says so; the execution does not wait for the sleeping child.
func TestHookKilledAtItsTimeout(t *testing.T) {
	fake := nixsystest.New()
	br, key, statuses, _ := hookNode(t, fake, hook.Set{PreActivate: []hook.Hook{sh("echo started; sleep 30; echo never", 300*time.Millisecond)}}, nil, nil)
	start := time.Now()
	publishDesired(t, br, key, "r-1", tlNew)
	s := awaitExec(t, statuses, "r-1", 10*time.Second)
	if s.Execution.State != proto.StateFailed || !strings.Contains(s.Execution.Error, "killed at its timeout of 300ms: started") {
		t.Errorf("execution %s %q", s.Execution.State, s.Execution.Error)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s", took)
	}
	if cur, _ := fake.Current(); cur != tlOld {
		t.Errorf("profile on %s, want the old system", cur)
	}
}

// The activate deadline passes while a pre_activate hook runs: timed
// out, nothing to roll back, and the hook is killed.
func TestActivateDeadlineKillsPreActivateHook(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	fake := nixsystest.New()
	br, key, statuses, _ := hookNode(t, fake, hook.Set{PreActivate: []hook.Hook{sh("echo $$ > "+pidFile+"; exec sleep 30", time.Minute)}}, nil,
		func(c *Config) { c.ActivateTimeout = 500 * time.Millisecond })
	publishDesired(t, br, key, "r-1", tlNew)
	s := awaitExec(t, statuses, "r-1", 10*time.Second)
	if s.Execution.State != proto.StateTimedOut || !strings.Contains(s.Execution.Error, "nothing was changed") {
		t.Errorf("execution %s %q", s.Execution.State, s.Execution.Error)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the hook (pid %d) still runs after the deadline", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if cur, _ := fake.Current(); cur != tlOld || slices.Contains(fake.Calls(), "set-profile "+tlNew) {
		t.Errorf("profile on %s, calls %q", cur, fake.Calls())
	}
}

// labd stopped while hooks ran. Restarted, it runs them again from the
// first: pre_activate before the profile moves (it had not), and
// post_activate before the checks (they had not passed).
func TestResumeInHooksRunsThemAgain(t *testing.T) {
	for _, tc := range []struct {
		name    string
		st      proto.ExecState
		phase   hook.Phase
		current string // where the profile is when labd restarts
		calls   []string
	}{
		{"pre_activate", proto.StateActivating, hook.PreActivate, tlOld, []string{"check switch " + tlNew, "set-profile " + tlNew, "activate switch " + tlNew}},
		{"post_activate", proto.StateVerifying, hook.PostActivate, tlNew, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ran := filepath.Join(t.TempDir(), "ran")
			fake := nixsystest.New()
			d := desired(uint64(time.Now().UnixMilli()), 0, proto.ActionSwitch)
			hooks := hook.Set{}
			h := []hook.Hook{sh("echo $LAB_HOOK >> "+ran, 5*time.Second)}
			if tc.phase == hook.PreActivate {
				hooks.PreActivate = h
			} else {
				hooks.PostActivate = h
			}
			_, _, statuses, _ := hookNode(t, fake, hooks, func(stateDir string) {
				fake.SetCurrent(tc.current)
				s := inHooks(tc.st, d, tc.phase)
				if err := os.MkdirAll(stateDir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := saveState(stateDir, s); err != nil {
					t.Fatal(err)
				}
			}, nil)
			s := awaitExec(t, statuses, d.Rollout, 10*time.Second)
			if s.Execution.State != proto.StateSucceeded {
				t.Errorf("execution %s %q, want succeeded", s.Execution.State, s.Execution.Error)
			}
			if b, _ := os.ReadFile(ran); string(b) != string(tc.phase)+"\n" {
				t.Errorf("hooks ran %q, want once: %s", b, tc.phase)
			}
			var calls []string
			for _, c := range fake.Calls() {
				if !strings.HasPrefix(c, "resume ") {
					calls = append(calls, c)
				}
			}
			if !slices.Equal(calls, tc.calls) {
				t.Errorf("calls %q, want %q", calls, tc.calls)
			}
		})
	}
}
