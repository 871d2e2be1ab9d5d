package node

import (
	"reflect"
	"strings"
	"testing"

	"github.com/lab-fleet/lab/node/hook"
	"github.com/lab-fleet/lab/proto"
)

// hookedMachine is testMachine with hooks in every phase.
func hookedMachine() machine {
	m := testMachine()
	m.hooks = map[hook.Phase]bool{hook.PreActivate: true, hook.PostActivate: true, hook.PreRollback: true, hook.PostRollback: true}
	return m
}

// inHooks is a state running the hooks of phase p.
func inHooks(st proto.ExecState, d *proto.Desired, p hook.Phase) state {
	s := at(st, d)
	s.Hooks = p
	return s
}

func TestHookTransitions(t *testing.T) {
	d := desired(10, 0, proto.ActionSwitch)
	boot := desired(10, 0, proto.ActionBoot)
	boot.Reboot = proto.RebootAlways
	wantEnv := hook.Env{Rollout: "r-1", Gen: 10, Toplevel: tlNew, Previous: tlOld, Action: "switch"}
	cases := []struct {
		name    string
		plain   bool // no hooks configured
		s       state
		ev      any
		want    proto.ExecState
		hooks   hook.Phase // s.Hooks afterwards
		effects []string
		check   func(t *testing.T, s state, effs []effect)
	}{
		{name: "fetched, pre_activate hooks: they run before the profile moves", s: at(proto.StateFetching, d), ev: evFetched{gen: 10, current: tlOld},
			want: proto.StateActivating, hooks: hook.PreActivate, effects: []string{"Hooks", "Timer"}, check: func(t *testing.T, _ state, effs []effect) {
				if h := effs[3].(effHooks); h.phase != hook.PreActivate || h.env != wantEnv {
					t.Errorf("hooks %+v, want pre_activate with %+v", h, wantEnv)
				}
				if tm := effs[4].(effTimer); tm.phase != proto.StateActivating {
					t.Errorf("timer %+v: the activate deadline covers the hooks", tm)
				}
			}},
		{name: "fetched, no hooks configured: activate at once", plain: true, s: at(proto.StateFetching, d), ev: evFetched{gen: 10, current: tlOld},
			want: proto.StateActivating, effects: []string{"Activate", "Timer"}},
		{name: "pre_activate passed: the profile moves, the event has their output", s: inHooks(proto.StateActivating, d, hook.PreActivate),
			ev:   evHooked{gen: 10, phase: hook.PreActivate, ok: true, detail: "pre_activate hooks passed: [x]: ok: ready"},
			want: proto.StateActivating, effects: []string{"Activate"}, check: func(t *testing.T, _ state, effs []effect) {
				if ev := effs[1].(effEvent); ev.from != proto.StateActivating || ev.to != proto.StateActivating || !strings.Contains(ev.detail, "ready") {
					t.Errorf("event %+v", ev)
				}
				if a := effs[2].(effActivate); a.resume || a.previous != tlOld || a.toplevel != tlNew {
					t.Errorf("activate %+v", a)
				}
			}},
		{name: "pre_activate failed: failed, nothing was changed, the hook named", s: inHooks(proto.StateActivating, d, hook.PreActivate),
			ev:   evHooked{gen: 10, phase: hook.PreActivate, detail: "pre_activate[0] [/bin/db-check]: exit status 3: db is locked"},
			want: proto.StateFailed, check: func(t *testing.T, s state, effs []effect) {
				if !strings.Contains(s.Exec.Error, "nothing was changed") || !strings.Contains(s.Exec.Error, "/bin/db-check]: exit status 3: db is locked") {
					t.Errorf("error %q", s.Exec.Error)
				}
				if ev := effs[1].(effEvent); ev.to != proto.StateFailed || !strings.Contains(ev.detail, "db is locked") {
					t.Errorf("event %+v: the output's tail is not in it", ev)
				}
			}},
		{name: "a stale hook result: nothing", s: inHooks(proto.StateActivating, d, hook.PreActivate), ev: evHooked{gen: 9, phase: hook.PreActivate},
			want: proto.StateActivating, hooks: hook.PreActivate},
		{name: "a result of another phase: nothing", s: inHooks(proto.StateActivating, d, hook.PreActivate), ev: evHooked{gen: 10, phase: hook.PostActivate},
			want: proto.StateActivating, hooks: hook.PreActivate},
		{name: "hooks after their execution ended: nothing", s: at(proto.StateTimedOut, d), ev: evHooked{gen: 10, phase: hook.PreActivate, ok: true},
			want: proto.StateTimedOut},
		{name: "activate deadline while pre_activate runs: timed out, nothing to roll back", s: inHooks(proto.StateActivating, d, hook.PreActivate),
			ev: evTimeout{gen: 10, phase: proto.StateActivating}, want: proto.StateTimedOut, check: func(t *testing.T, s state, _ []effect) {
				if !strings.Contains(s.Exec.Error, "pre_activate") || !strings.Contains(s.Exec.Error, "nothing was changed") {
					t.Errorf("error %q", s.Exec.Error)
				}
			}},
		{name: "switched, post_activate hooks: they run before the checks", s: at(proto.StateActivating, d), ev: evActivated{gen: 10, profileMoved: true, ok: true},
			want: proto.StateVerifying, hooks: hook.PostActivate, effects: []string{"Hooks", "Timer"}, check: func(t *testing.T, _ state, effs []effect) {
				if h := effs[3].(effHooks); h.phase != hook.PostActivate || h.env != wantEnv {
					t.Errorf("hooks %+v", h)
				}
			}},
		{name: "post_activate passed: the checks run", s: inHooks(proto.StateVerifying, d, hook.PostActivate), ev: evHooked{gen: 10, phase: hook.PostActivate, ok: true, detail: "passed"},
			want: proto.StateVerifying, effects: []string{"Checks"}},
		{name: "post_activate failed: a failed health check, roll back", s: inHooks(proto.StateVerifying, d, hook.PostActivate),
			ev:   evHooked{gen: 10, phase: hook.PostActivate, detail: "post_activate[1] [/bin/migrate]: exit status 1: no such table"},
			want: proto.StateRollingBack, effects: []string{"Rollback"}, check: func(t *testing.T, s state, effs []effect) {
				if !strings.Contains(s.Exec.Error, "post_activate hook failed") || !strings.Contains(s.Exec.Error, "no such table") {
					t.Errorf("error %q", s.Exec.Error)
				}
				if r := effs[len(effs)-1].(effRollback); r.previous != tlOld || r.env != wantEnv {
					t.Errorf("rollback %+v", r)
				}
			}},
		{name: "checks result while post_activate runs: ignored", s: inHooks(proto.StateVerifying, d, hook.PostActivate), ev: evChecked{gen: 10, ok: true},
			want: proto.StateVerifying, hooks: hook.PostActivate},
		{name: "confirm deadline while post_activate runs: roll back, saying so", s: inHooks(proto.StateVerifying, d, hook.PostActivate),
			ev: evTimeout{gen: 10, phase: proto.StateVerifying}, want: proto.StateRollingBack, effects: []string{"Rollback"},
			check: func(t *testing.T, s state, _ []effect) {
				if !s.TimedOut || !strings.Contains(s.Exec.Error, "post_activate hooks ran") {
					t.Errorf("timed out %v, error %q", s.TimedOut, s.Exec.Error)
				}
			}},
		{name: "boot, back after the reboot: post_activate, then the checks", s: func() state { s := at(proto.StateRebooting, boot); s.BootBefore = "boot-1"; return s }(),
			ev: evResume{}, want: proto.StateVerifying, hooks: hook.PostActivate, effects: []string{"Hooks", "Timer"}},
		{name: "resume in pre_activate: run them again, from the first; the profile has not moved", s: inHooks(proto.StateActivating, d, hook.PreActivate),
			ev: evResume{}, want: proto.StateActivating, hooks: hook.PreActivate, effects: []string{"Hooks", "Timer"}, check: func(t *testing.T, _ state, effs []effect) {
				if h := effs[0].(effHooks); h.phase != hook.PreActivate {
					t.Errorf("hooks %+v", h)
				}
			}},
		{name: "resume in post_activate: they had not passed, run them again", s: inHooks(proto.StateVerifying, d, hook.PostActivate),
			ev: evResume{}, want: proto.StateVerifying, hooks: hook.PostActivate, effects: []string{"Hooks", "Timer"}},
		{name: "resume activating after pre_activate passed: reattach, no hooks again", s: at(proto.StateActivating, d), ev: evResume{},
			want: proto.StateActivating, effects: []string{"Activate", "Timer"}},
		{name: "resume rolling back: the rollback effect runs the rollback hooks", s: at(proto.StateRollingBack, d), ev: evResume{},
			want: proto.StateRollingBack, effects: []string{"Rollback"}, check: func(t *testing.T, _ state, effs []effect) {
				if r := effs[0].(effRollback); r.env != wantEnv {
					t.Errorf("rollback %+v", r)
				}
			}},
		{name: "rolled back, a rollback hook failed: reported, still rolled back", s: func() state {
			s := at(proto.StateRollingBack, d)
			s.Exec.Error = "health check failed: web: 500"
			return s
		}(), ev: evRolledBack{gen: 10, hooks: "pre_rollback hooks failed (the rollback went on): pre_rollback[0] [x]: exit status 1: oops"},
			want: proto.StateRolledBack, check: func(t *testing.T, s state, effs []effect) {
				if ev := effs[1].(effEvent); !strings.HasPrefix(ev.detail, "health check failed: web: 500; pre_rollback hooks failed") || !strings.Contains(ev.detail, "oops") {
					t.Errorf("event %+v", ev)
				}
			}},
		{name: "rollback failed with hooks: both said", s: at(proto.StateRollingBack, d), ev: evRolledBack{gen: 10, err: errString("exit 1"), hooks: "post_rollback hooks passed: ok"},
			want: proto.StateRollbackFailed, check: func(t *testing.T, s state, _ []effect) {
				if !strings.Contains(s.Exec.Error, "rollback failed: exit 1; post_rollback hooks passed") {
					t.Errorf("error %q", s.Exec.Error)
				}
			}},
		{name: "a new desired clears a stale hooks phase", s: inHooks(proto.StateFailed, d, hook.PreActivate), ev: evDesired{d: desired(11, 0, proto.ActionSwitch), current: tlOld},
			want: proto.StateFetching, effects: []string{"Fetch", "Timer"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := hookedMachine()
			if tc.plain {
				m = testMachine()
			}
			before := tc.s
			s, effs := m.next(tc.s, tc.ev)
			if s.Exec.State != tc.want || s.Hooks != tc.hooks {
				t.Fatalf("state %s hooks %q, want %s hooks %q (error %q)", s.Exec.State, s.Hooks, tc.want, tc.hooks, s.Exec.Error)
			}
			if got := kinds(effs); !reflect.DeepEqual(got, tc.effects) {
				t.Errorf("effects %v, want %v", got, tc.effects)
			}
			if s.Exec.State != before.Exec.State || s.Hooks != before.Hooks {
				if len(effs) == 0 {
					t.Fatal("a state change without effects")
				}
				if _, ok := effs[0].(effPersist); !ok {
					t.Errorf("first effect %T, want persist", effs[0])
				}
			}
			if tc.check != nil {
				tc.check(t, s, effs)
			}
		})
	}
}

type errString string

func (e errString) Error() string { return string(e) }
