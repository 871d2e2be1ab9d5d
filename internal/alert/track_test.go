package alert

import (
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func kinds(evs []Event) []Kind {
	out := make([]Kind, len(evs))
	for i, e := range evs {
		out[i] = e.Kind
	}
	return out
}

func expect(t *testing.T, step string, evs []Event, want ...Kind) {
	t.Helper()
	got := kinds(evs)
	if len(got) != len(want) {
		t.Fatalf("%s: events %v, want %v", step, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: events %v, want %v", step, got, want)
		}
	}
}

func TestRolloutEventsOnlyOnTransitions(t *testing.T) {
	tr := newTracker(time.Minute, t0)
	old := proto.RolloutState{Rollout: "r-old", State: proto.RolloutFailed}
	run := proto.RolloutState{Rollout: "r-1", State: proto.RolloutRunning, Counters: proto.Counters{Running: 3}}
	expect(t, "first sight", tr.observe(nil, []proto.RolloutState{old, run}, t0))
	run.Halted, run.Reason = true, "max failures 1 reached: 1 failed"
	expect(t, "halted", tr.observe(nil, []proto.RolloutState{old, run}, t0), RolloutHalted)
	expect(t, "again", tr.observe(nil, []proto.RolloutState{old, run}, t0))
	run.State, run.Counters = proto.RolloutFailed, proto.Counters{Succeeded: 2, Failed: 1}
	evs := tr.observe(nil, []proto.RolloutState{old, run}, t0)
	expect(t, "finished", evs, RolloutFinished)
	if e := evs[0]; e.Severity != "critical" || e.Rollout != "r-1" || e.Counters.Failed != 1 || e.Detail != run.Reason {
		t.Errorf("finished: %+v", e)
	}
	// Halted and finished in one step (a cancel before a wave opened):
	// one event, finished, which names the halt.
	tr2 := newTracker(time.Minute, t0)
	r := proto.RolloutState{Rollout: "r-2", State: proto.RolloutRunning}
	tr2.observe(nil, []proto.RolloutState{r}, t0)
	r.State, r.Halted, r.Reason = proto.RolloutCancelled, true, "cancelled by ops"
	evs = tr2.observe(nil, []proto.RolloutState{r}, t0)
	expect(t, "cancelled", evs, RolloutFinished)
	if evs[0].Severity != "warning" || evs[0].Summary == "" {
		t.Errorf("cancelled: %+v", evs[0])
	}
	// A pending rollout is not finished.
	tr3 := newTracker(time.Minute, t0)
	p := proto.RolloutState{Rollout: "r-3", State: proto.RolloutRunning}
	tr3.observe(nil, []proto.RolloutState{p}, t0)
	p.State = proto.RolloutPending
	expect(t, "pending", tr3.observe(nil, []proto.RolloutState{p}, t0))
	p.State = proto.RolloutSucceeded
	expect(t, "pending → succeeded", tr3.observe(nil, []proto.RolloutState{p}, t0), RolloutFinished)
}

func TestMachineEvents(t *testing.T) {
	tr := newTracker(10*time.Minute, t0)
	web := render.StatusRow{Node: "web", Online: true, State: proto.StateRolledBack, Rollout: "r-old"}
	db := render.StatusRow{Node: "db", Online: true, State: proto.StateSucceeded, Rollout: "r-old"}
	expect(t, "first sight of an old rollback", tr.observe([]render.StatusRow{db, web}, nil, t0))
	web.State, web.Rollout = proto.StateActivating, "r-1"
	db.State, db.Rollout = proto.StateActivating, "r-1"
	expect(t, "activating", tr.observe([]render.StatusRow{db, web}, nil, t0))
	web.State, web.Error = proto.StateRolledBack, "health check http failed\nmore"
	db.State, db.Error = proto.StateRollbackFailed, "switch-to-configuration failed"
	evs := tr.observe([]render.StatusRow{db, web}, nil, t0)
	expect(t, "rolled back and rollback failed", evs, MachineRollbackFailed, MachineRolledBack)
	if evs[0].Machine != "db" || evs[0].Severity != "critical" || evs[1].Summary != "web rolled back to its previous system: health check http failed" {
		t.Errorf("events: %+v", evs)
	}
	expect(t, "unchanged", tr.observe([]render.StatusRow{db, web}, nil, t0))
}

func TestOfflineThreshold(t *testing.T) {
	tr := newTracker(10*time.Minute, t0)
	pi := render.StatusRow{Node: "pi", Online: true, State: proto.StateIdle}
	gone := render.StatusRow{Node: "gone", Online: false, State: proto.StateIdle, Since: t0.Add(-48 * time.Hour)}
	expect(t, "first sight", tr.observe([]render.StatusRow{gone, pi}, nil, t0))
	pi.Online, pi.Since = false, t0.Add(time.Minute)
	expect(t, "just went", tr.observe([]render.StatusRow{gone, pi}, nil, t0.Add(2*time.Minute)))
	expect(t, "9 min", tr.observe([]render.StatusRow{gone, pi}, nil, t0.Add(10*time.Minute)))
	evs := tr.observe([]render.StatusRow{gone, pi}, nil, t0.Add(11*time.Minute))
	expect(t, "10 min", evs, MachineOffline)
	if !evs[0].Since.Equal(t0.Add(time.Minute)) || evs[0].Summary != "pi has been offline for 10m0s" {
		t.Errorf("offline: %+v", evs[0])
	}
	expect(t, "once", tr.observe([]render.StatusRow{gone, pi}, nil, t0.Add(30*time.Minute)))
	pi.Online = true
	expect(t, "back", tr.observe([]render.StatusRow{gone, pi}, nil, t0.Add(31*time.Minute)), MachineOnline)
	// A short absence is not announced, nor its end.
	pi.Online = false
	tr.observe([]render.StatusRow{gone, pi}, nil, t0.Add(40*time.Minute))
	pi.Online = true
	expect(t, "blip", tr.observe([]render.StatusRow{gone, pi}, nil, t0.Add(41*time.Minute)))
}

func TestChecksOutsideRollouts(t *testing.T) {
	tr := newTracker(time.Minute, t0)
	ok := proto.CheckResult{OK: true, At: 1}
	bad := proto.CheckResult{OK: false, Detail: "connection refused", At: 2}
	n := render.StatusRow{Node: "nas", Online: true, State: proto.StateSucceeded, Checks: proto.CheckResults{"smb": ok, "disk": bad}}
	expect(t, "first sight (disk already failing)", tr.observe([]render.StatusRow{n}, nil, t0))
	n.Checks = proto.CheckResults{"smb": bad, "disk": bad}
	evs := tr.observe([]render.StatusRow{n}, nil, t0)
	expect(t, "smb fails", evs, CheckFailing)
	if evs[0].Check != "smb" || evs[0].Detail != "connection refused" {
		t.Errorf("failing: %+v", evs[0])
	}
	expect(t, "still failing", tr.observe([]render.StatusRow{n}, nil, t0))
	n.Checks = proto.CheckResults{"smb": ok, "disk": ok}
	expect(t, "both pass", tr.observe([]render.StatusRow{n}, nil, t0), CheckRecovered, CheckRecovered)
	// During a rollout a failing check is the rollout's business.
	n.State = proto.StateVerifying
	n.Checks = proto.CheckResults{"smb": bad, "disk": ok}
	expect(t, "during a rollout", tr.observe([]render.StatusRow{n}, nil, t0))
	n.State = proto.StateSucceeded
	expect(t, "still failing after it", tr.observe([]render.StatusRow{n}, nil, t0), CheckFailing)
}

// TestNewsAtFirstSight: what happened after the tracker started is news
// even when it is the first thing seen of a rollout or machine.
func TestNewsAtFirstSight(t *testing.T) {
	tr := newTracker(time.Minute, t0)
	after := t0.Add(time.Second).UnixMilli()
	rs := proto.RolloutState{Envelope: proto.Envelope{TS: after}, Rollout: "r-9", State: proto.RolloutSucceeded}
	st := &proto.NodeStatus{Execution: proto.Execution{Rollout: "r-9", State: proto.StateRollbackFailed, Since: after}}
	m := render.StatusRow{Node: "m", Online: true, State: proto.StateRollbackFailed, Rollout: "r-9", Status: st}
	expect(t, "after the start", tr.observe([]render.StatusRow{m}, []proto.RolloutState{rs}, t0.Add(2*time.Second)), RolloutFinished, MachineRollbackFailed)
	tr = newTracker(time.Minute, t0.Add(time.Minute))
	expect(t, "before the start", tr.observe([]render.StatusRow{m}, []proto.RolloutState{rs}, t0.Add(2*time.Minute)))
}

// TestVerificationIsNotACheckFailing: a machine that rolled back carries
// the failing result of its verification; that is the rollout's news, not
// a check failing outside it. Its next run (check_interval) is.
func TestVerificationIsNotACheckFailing(t *testing.T) {
	tr := newTracker(time.Minute, t0)
	ended := t0.Add(10 * time.Second).UnixMilli()
	st := &proto.NodeStatus{Execution: proto.Execution{Rollout: "r-1", State: proto.StateActivating, Since: t0.UnixMilli()}}
	n := render.StatusRow{Node: "n1", Online: true, State: proto.StateActivating, Rollout: "r-1", Status: st,
		Checks: proto.CheckResults{"web": {OK: true, At: 1}}}
	tr.observe([]render.StatusRow{n}, nil, t0)
	st2 := &proto.NodeStatus{Execution: proto.Execution{Rollout: "r-1", State: proto.StateRolledBack, Since: ended}}
	n.State, n.Status, n.Error = proto.StateRolledBack, st2, "health check failed"
	n.Checks = proto.CheckResults{"web": {OK: false, Detail: "refused", At: ended - 3000}}
	expect(t, "rolled back with the verification's failing check", tr.observe([]render.StatusRow{n}, nil, t0.Add(11*time.Second)), MachineRolledBack)
	n.Checks = proto.CheckResults{"web": {OK: false, Detail: "refused", At: ended + 300000}}
	expect(t, "the next periodic run fails too", tr.observe([]render.StatusRow{n}, nil, t0.Add(6*time.Minute)), CheckFailing)
}
