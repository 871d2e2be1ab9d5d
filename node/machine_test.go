package node

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/clock"
	"github.com/lab-fleet/lab/proto"
)

const (
	tlOld = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-n1-1"
	tlNew = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-n1-2"
)

var epoch = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func testMachine() machine {
	return machine{groups: []string{"web"}, clock: clock.NewFake(epoch),
		timeouts: timeouts{fetch: time.Minute, activate: 2 * time.Minute, confirm: 3 * time.Minute}, bootID: "boot-2"}
}

func desired(gen uint64, wave int, action proto.Action) *proto.Desired {
	return &proto.Desired{Node: "n1", Rollout: "r-1", Gen: gen, Toplevel: tlNew, Action: action, Wave: wave}
}

// at is a state executing d in state st, with the old system recorded.
func at(st proto.ExecState, d *proto.Desired) state {
	return state{Exec: proto.Execution{Rollout: d.Rollout, Gen: d.Gen, Toplevel: d.Toplevel, Action: d.Action, State: st},
		Desired: d, HighGen: d.Gen, Previous: tlOld, LastBoot: "boot-2"}
}

// kinds names the effects' types, in order, without the bookkeeping ones
// every transition has (persist, event, status).
func kinds(effs []effect) []string {
	var out []string
	for _, e := range effs {
		switch e.(type) {
		case effPersist, effEvent, effStatus:
			continue
		}
		out = append(out, strings.TrimPrefix(reflect.TypeOf(e).Name(), "eff"))
	}
	return out
}

func TestTransitions(t *testing.T) {
	d := desired(10, 0, proto.ActionSwitch)
	boot := desired(10, 0, proto.ActionBoot)
	boot.Reboot = proto.RebootAlways
	waved := desired(10, 2, proto.ActionSwitch)
	running := func(wave int) map[string]gate {
		return map[string]gate{"web": {Rollout: "r-1", OpenWave: wave, State: proto.GateRunning}}
	}
	cases := []struct {
		name    string
		s       state
		ev      any
		want    proto.ExecState
		effects []string
		check   func(t *testing.T, s state, effs []effect)
	}{
		{name: "idle, new desired, wave 0: fetch", s: state{}, ev: evDesired{d: d, current: tlOld},
			want: proto.StateFetching, effects: []string{"Fetch", "Timer"},
			check: func(t *testing.T, s state, effs []effect) {
				if s.HighGen != 10 || s.Desired != d {
					t.Errorf("high gen %d", s.HighGen)
				}
				if tm := effs[len(effs)-1].(effTimer); tm.d != time.Minute || tm.phase != proto.StateFetching {
					t.Errorf("timer %+v", tm)
				}
			}},
		{name: "desired toplevel already runs", s: state{}, ev: evDesired{d: d, current: tlNew},
			want: proto.StateAlreadyCurrent, check: func(t *testing.T, s state, _ []effect) {
				if s.AppliedGen != 10 {
					t.Errorf("applied %d", s.AppliedGen)
				}
			}},
		{name: "boot action on the current toplevel still runs", s: state{}, ev: evDesired{d: boot, current: tlNew},
			want: proto.StateFetching, effects: []string{"Fetch", "Timer"}},
		{name: "later wave without gate waits", s: state{}, ev: evDesired{d: waved, current: tlOld}, want: proto.StateQueued},
		{name: "later wave with an open gate goes", s: state{Gates: running(2)}, ev: evDesired{d: waved, current: tlOld},
			want: proto.StateFetching, effects: []string{"Fetch", "Timer"}},
		{name: "gate opening a queued node's wave", s: at(proto.StateQueued, waved), ev: evGate{group: "web", g: running(2)["web"]},
			want: proto.StateFetching, effects: []string{"Fetch", "Timer"}},
		{name: "gate of another rollout does not open", s: at(proto.StateQueued, waved), ev: evGate{group: "web", g: gate{Rollout: "r-0", OpenWave: 9, State: proto.GateRunning}},
			want: proto.StateQueued},
		{name: "gate of a lower wave does not open", s: at(proto.StateQueued, waved), ev: evGate{group: "web", g: running(1)["web"]},
			want: proto.StateQueued},
		{name: "cancelled gate while queued", s: at(proto.StateQueued, waved), ev: evGate{group: "web", g: gate{Rollout: "r-1", State: proto.GateCancelled}},
			want: proto.StateCancelled},
		{name: "cancelled gate while activating is ignored", s: at(proto.StateActivating, d), ev: evGate{group: "web", g: gate{Rollout: "r-1", State: proto.GateCancelled}},
			want: proto.StateActivating},
		{name: "the retained gate again: nothing", s: func() state {
			s := at(proto.StateQueued, waved)
			s.Gates = map[string]gate{"web": {Rollout: "r-1", OpenWave: 1, State: proto.GateRunning, Seq: 5}}
			return s
		}(),
			ev: evGate{group: "web", g: gate{Rollout: "r-1", OpenWave: 1, State: proto.GateRunning, Seq: 5}}, want: proto.StateQueued},
		{name: "an older gate is a replay", s: func() state {
			s := at(proto.StateQueued, waved)
			s.Gates = map[string]gate{"web": {Rollout: "r-1", OpenWave: 1, State: proto.GateRunning, Seq: 5}}
			return s
		}(),
			ev: evGate{group: "web", g: gate{Rollout: "r-1", OpenWave: 2, State: proto.GateRunning, Seq: 4}}, want: proto.StateQueued, effects: []string{"Reject"}},
		{name: "same gen again: nothing", s: at(proto.StateSucceeded, d), ev: evDesired{d: d, current: tlNew}, want: proto.StateSucceeded},
		{name: "older gen: rejected as a replay", s: at(proto.StateSucceeded, d), ev: evDesired{d: desired(9, 0, proto.ActionSwitch), current: tlNew},
			want: proto.StateSucceeded, effects: []string{"Reject"}},
		{name: "newer desired while activating is held", s: at(proto.StateActivating, d), ev: evDesired{d: desired(11, 0, proto.ActionSwitch), current: tlOld},
			want: proto.StateActivating, check: func(t *testing.T, s state, _ []effect) {
				if s.Held == nil || s.Held.Gen != 11 {
					t.Errorf("held %+v", s.Held)
				}
			}},
		{name: "held desired starts when the execution ends",
			s:  func() state { s := at(proto.StateVerifying, d); s.Held = desired(11, 0, proto.ActionSwitch); return s }(),
			ev: evChecked{gen: 10, ok: true}, want: proto.StateFetching, effects: []string{"Fetch", "Timer"},
			check: func(t *testing.T, s state, _ []effect) {
				if s.Held != nil || s.Exec.Gen != 11 || s.AppliedGen != 10 {
					t.Errorf("held %v gen %d applied %d", s.Held, s.Exec.Gen, s.AppliedGen)
				}
			}},
		{name: "newer desired while queued replaces it", s: at(proto.StateQueued, waved), ev: evDesired{d: desired(11, 0, proto.ActionSwitch), current: tlOld},
			want: proto.StateFetching, effects: []string{"Fetch", "Timer"}},
		{name: "fetched: record previous, activate", s: at(proto.StateFetching, d), ev: evFetched{gen: 10, current: tlOld},
			want: proto.StateActivating, effects: []string{"Activate", "Timer"}, check: func(t *testing.T, s state, effs []effect) {
				if s.Previous != tlOld || s.Exec.Attempt != 1 {
					t.Errorf("previous %q attempt %d", s.Previous, s.Exec.Attempt)
				}
				if a := effs[len(effs)-2].(effActivate); a.resume || a.toplevel != tlNew {
					t.Errorf("activate %+v", a)
				}
			}},
		{name: "fetch failed", s: at(proto.StateFetching, d), ev: evFetched{gen: 10, err: fmt.Errorf("no substituter")}, want: proto.StateFailed},
		{name: "stale fetch result ignored", s: at(proto.StateFetching, d), ev: evFetched{gen: 9, current: tlOld}, want: proto.StateFetching},
		{name: "profile did not move: failed, nothing to undo", s: at(proto.StateActivating, d), ev: evActivated{gen: 10, detail: "nix-env"}, want: proto.StateFailed},
		{name: "activation failed: roll back", s: at(proto.StateActivating, d), ev: evActivated{gen: 10, profileMoved: true, detail: "exit 1"},
			want: proto.StateRollingBack, effects: []string{"Rollback"}, check: func(t *testing.T, _ state, effs []effect) {
				if r := effs[len(effs)-1].(effRollback); r.previous != tlOld || r.action != proto.ActionSwitch {
					t.Errorf("rollback %+v", r)
				}
			}},
		{name: "activated: verify", s: at(proto.StateActivating, d), ev: evActivated{gen: 10, profileMoved: true, ok: true},
			want: proto.StateVerifying, effects: []string{"Checks", "Timer"}},
		{name: "boot activated: reboot", s: at(proto.StateActivating, boot), ev: evActivated{gen: 10, profileMoved: true, ok: true},
			want: proto.StateRebooting, effects: []string{"Reboot", "Timer"}, check: func(t *testing.T, s state, _ []effect) {
				if s.BootBefore != "boot-2" {
					t.Errorf("boot before %q", s.BootBefore)
				}
			}},
		{name: "boot without reboot: succeeded, runs after the next boot", s: at(proto.StateActivating, desired(10, 0, proto.ActionBoot)), ev: evActivated{gen: 10, profileMoved: true, ok: true},
			want: proto.StateSucceeded},
		{name: "checks passed", s: at(proto.StateVerifying, d), ev: evChecked{gen: 10, ok: true}, want: proto.StateSucceeded,
			check: func(t *testing.T, s state, _ []effect) {
				if s.AppliedGen != 10 {
					t.Errorf("applied %d", s.AppliedGen)
				}
			}},
		{name: "checks failed: roll back", s: at(proto.StateVerifying, d), ev: evChecked{gen: 10, detail: "web: 500"}, want: proto.StateRollingBack, effects: []string{"Rollback"}},
		{name: "no previous system: rollback failed, loudly", s: func() state { s := at(proto.StateVerifying, d); s.Previous = ""; return s }(),
			ev: evChecked{gen: 10}, want: proto.StateRollbackFailed},
		{name: "rolled back", s: at(proto.StateRollingBack, d), ev: evRolledBack{gen: 10}, want: proto.StateRolledBack},
		{name: "rollback failed", s: at(proto.StateRollingBack, d), ev: evRolledBack{gen: 10, err: fmt.Errorf("exit 1")}, want: proto.StateRollbackFailed},
		{name: "rolled back after a deadline: timed-out", s: func() state { s := at(proto.StateRollingBack, d); s.TimedOut = true; return s }(),
			ev: evRolledBack{gen: 10}, want: proto.StateTimedOut},
		{name: "boot rolled back after the reboot: reboot once more", s: func() state { s := at(proto.StateRollingBack, boot); s.Rebooted = true; return s }(),
			ev: evRolledBack{gen: 10}, want: proto.StateRolledBack, effects: []string{"Reboot"}},
		{name: "fetch deadline", s: at(proto.StateFetching, d), ev: evTimeout{gen: 10, phase: proto.StateFetching}, want: proto.StateTimedOut},
		{name: "activation deadline: roll back", s: at(proto.StateActivating, d), ev: evTimeout{gen: 10, phase: proto.StateActivating},
			want: proto.StateRollingBack, effects: []string{"Rollback"}, check: func(t *testing.T, s state, _ []effect) {
				if !s.TimedOut {
					t.Error("not marked timed out")
				}
			}},
		{name: "confirm deadline, broker never reached: roll back, saying so", s: at(proto.StateVerifying, d), ev: evTimeout{gen: 10, phase: proto.StateVerifying},
			want: proto.StateRollingBack, effects: []string{"Rollback"}, check: func(t *testing.T, s state, _ []effect) {
				if !strings.Contains(s.Exec.Error, "broker was not reachable") {
					t.Errorf("error %q", s.Exec.Error)
				}
			}},
		{name: "broker confirmed while verifying", s: at(proto.StateVerifying, d), ev: evConfirmed{gen: 10}, want: proto.StateVerifying,
			check: func(t *testing.T, s state, _ []effect) {
				if !s.Confirmed {
					t.Error("not recorded")
				}
			}},
		{name: "confirm of another gen ignored", s: at(proto.StateVerifying, d), ev: evConfirmed{gen: 9}, want: proto.StateVerifying,
			check: func(t *testing.T, s state, _ []effect) {
				if s.Confirmed {
					t.Error("recorded")
				}
			}},
		{name: "confirm deadline after the broker was reached: checks too slow", s: func() state { s := at(proto.StateVerifying, d); s.Confirmed = true; return s }(),
			ev: evTimeout{gen: 10, phase: proto.StateVerifying}, want: proto.StateRollingBack, effects: []string{"Rollback"},
			check: func(t *testing.T, s state, _ []effect) {
				if s.Exec.Error != "verifying timed out" {
					t.Errorf("error %q", s.Exec.Error)
				}
			}},
		{name: "stale deadline ignored", s: at(proto.StateVerifying, d), ev: evTimeout{gen: 10, phase: proto.StateActivating}, want: proto.StateVerifying},
		{name: "cancel while fetching", s: at(proto.StateFetching, d), ev: evCancel{rollout: "r-1"}, want: proto.StateCancelled},
		{name: "cancel of another rollout ignored", s: at(proto.StateQueued, d), ev: evCancel{rollout: "r-0"}, want: proto.StateQueued},
		{name: "cancel refused while activating", s: at(proto.StateActivating, d), ev: evCancel{rollout: "r-1"}, want: proto.StateActivating},
		{name: "resume fetching", s: at(proto.StateFetching, d), ev: evResume{}, want: proto.StateFetching, effects: []string{"Fetch", "Timer"}},
		{name: "resume activating reattaches", s: at(proto.StateActivating, d), ev: evResume{}, want: proto.StateActivating, effects: []string{"Activate", "Timer"},
			check: func(t *testing.T, _ state, effs []effect) {
				if a := effs[0].(effActivate); !a.resume {
					t.Error("resume not set: a second activation would start")
				}
			}},
		{name: "resume verifying", s: at(proto.StateVerifying, d), ev: evResume{}, want: proto.StateVerifying, effects: []string{"Checks", "Timer"}},
		{name: "resume rolling back", s: at(proto.StateRollingBack, d), ev: evResume{}, want: proto.StateRollingBack, effects: []string{"Rollback"}},
		{name: "resume rebooting after the reboot: verify", s: func() state { s := at(proto.StateRebooting, boot); s.BootBefore = "boot-1"; return s }(),
			ev: evResume{}, want: proto.StateVerifying, effects: []string{"Checks", "Timer"}, check: func(t *testing.T, s state, _ []effect) {
				if !s.Rebooted {
					t.Error("not marked rebooted")
				}
			}},
		{name: "resume rebooting, same boot: ask again", s: func() state { s := at(proto.StateRebooting, boot); s.BootBefore = "boot-2"; return s }(),
			ev: evResume{}, want: proto.StateRebooting, effects: []string{"Reboot", "Timer"}},
		{name: "start after a reboot: checks run once", s: func() state { s := at(proto.StateSucceeded, d); s.LastBoot = "boot-1"; return s }(),
			ev: evResume{}, want: proto.StateSucceeded, effects: []string{"BootChecks"}},
		{name: "state not saved at the start: failed, nothing moved", s: at(proto.StateFetching, d), ev: evPersistFailed{gen: 10, err: fmt.Errorf("read-only file system")},
			want: proto.StateFailed},
		{name: "state not saved later: no effect here", s: at(proto.StateActivating, d), ev: evPersistFailed{gen: 10, err: fmt.Errorf("x")}, want: proto.StateActivating},
		{name: "the reboot command of a boot activation failed: roll back now", s: at(proto.StateRebooting, boot), ev: evRebootFailed{gen: 10, detail: "reboot command failed: exit status 1"},
			want: proto.StateRollingBack, effects: []string{"Rollback"}, check: func(t *testing.T, s state, _ []effect) {
				if !strings.Contains(s.Exec.Error, "did not reboot: reboot command failed") {
					t.Errorf("error %q", s.Exec.Error)
				}
			}},
		{name: "a stale reboot failure: nothing", s: at(proto.StateRebooting, boot), ev: evRebootFailed{gen: 9}, want: proto.StateRebooting},
		{name: "reboot command when idle", s: at(proto.StateSucceeded, d), ev: evRebootCmd{id: "c1"}, want: proto.StateSucceeded, effects: []string{"Ack", "Reboot"},
			check: func(t *testing.T, _ state, effs []effect) {
				if a := effs[1].(effAck); a.ack != (cmdAck{id: "c1", op: proto.OpReboot, outcome: proto.CmdAccepted}) || a.to != proto.StateRebooting {
					t.Errorf("ack %+v, want c1 reboot accepted", a)
				}
				if r := effs[2].(effReboot); r.cmd.id != "c1" {
					t.Errorf("reboot %+v does not name the command", r)
				}
			}},
		{name: "reboot command refused while activating", s: at(proto.StateActivating, d), ev: evRebootCmd{id: "c1"}, want: proto.StateActivating, effects: []string{"Ack"},
			check: func(t *testing.T, _ state, effs []effect) {
				if a := effs[1].(effAck); a.ack != (cmdAck{id: "c1", op: proto.OpReboot, outcome: proto.CmdRefused}) || a.to != proto.StateRejected || !strings.Contains(a.detail, "activating") {
					t.Errorf("ack %+v, want c1 reboot refused because activating", a)
				}
			}},
		{name: "reboot command replayed: nothing", s: func() state { s := at(proto.StateSucceeded, d); s.Commands = []string{"c1"}; return s }(),
			ev: evRebootCmd{id: "c1"}, want: proto.StateSucceeded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.s
			s, effs := testMachine().next(tc.s, tc.ev)
			if s.Exec.State != tc.want {
				t.Fatalf("state %s, want %s (error %q)", s.Exec.State, tc.want, s.Exec.Error)
			}
			if got := kinds(effs); !reflect.DeepEqual(got, tc.effects) {
				t.Errorf("effects %v, want %v", got, tc.effects)
			}
			if s.Exec.State != before.Exec.State {
				// Every change is persisted before anything else runs.
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

// next is pure: the same input gives the same output, and the input
// state is not modified.
func TestTransitionsArePure(t *testing.T) {
	d := desired(10, 0, proto.ActionSwitch)
	s := at(proto.StateVerifying, d)
	s.Gates = map[string]gate{"web": {Rollout: "r-1", OpenWave: 1, State: proto.GateRunning}}
	a, ea := testMachine().next(s, evChecked{gen: 10, detail: "web: 500"})
	b, eb := testMachine().next(s, evChecked{gen: 10, detail: "web: 500"})
	if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(ea, eb) {
		t.Fatal("not deterministic")
	}
	if s.Exec.State != proto.StateVerifying {
		t.Fatal("input state modified")
	}
}
