package controller

import (
	"time"

	"github.com/lab-fleet/lab/proto"
)

// tracker computes each target's progress from the fleet view. It is pure
// bookkeeping: the latest retained status decides, whatever was missed.
type tracker struct {
	plan    Plan
	created time.Time
	gens    map[string]uint64
	nodes   map[string]NodeResult
}

func newTracker(p Plan, now time.Time) *tracker {
	return &tracker{plan: p, created: now, gens: map[string]uint64{}, nodes: map[string]NodeResult{}}
}

// progress derives a target's result from its view.
func progress(v NodeView, rollout string, gen uint64, toplevel string) NodeResult {
	r := NodeResult{Node: v.Name, Gen: gen, Toplevel: toplevel, Online: v.Online, Pending: true}
	if s := v.Status; s != nil {
		switch e := s.Execution; {
		case e.Rollout == rollout && e.Gen == gen:
			r.State, r.Detail, r.Pending = e.State, e.Error, !e.State.Terminal()
		case s.AppliedGen > gen:
			r.State, r.Pending, r.Detail = proto.StateCancelled, false, "superseded by a newer rollout"
		}
	}
	if ev := v.LastEvent; r.State == "" && ev != nil && ev.State == proto.StateRejected && ev.Rollout == rollout {
		r.State, r.Pending, r.Detail = proto.StateRejected, false, ev.Detail
	}
	if r.Pending && r.State == "" {
		switch {
		case v.Online:
			r.Detail = "online, not started"
		case v.Status == nil && !v.Seen:
			r.Detail = "never seen on this broker: check the name; it converges if a labd of this name connects"
		default:
			r.Detail = "offline: will converge when it connects"
		}
	}
	return r
}

// update recomputes every target; it reports whether anything changed and
// calls onChange for each target whose state changed.
func (t *tracker) update(f *Fleet, onChange func(NodeResult)) bool {
	changed := false
	for _, n := range t.plan.Nodes() {
		v, _ := f.Get(n)
		r := progress(v, t.plan.ID, t.gens[n], t.plan.Targets[n])
		old, seen := t.nodes[n]
		if !seen || old.State != r.State || old.Online != r.Online {
			changed = true
			t.nodes[n] = r
			if onChange != nil && (seen || r.State != "") {
				onChange(r)
			}
		}
		t.nodes[n] = r
	}
	return changed
}

func (t *tracker) done() bool {
	for _, r := range t.nodes {
		if r.Pending {
			return false
		}
	}
	return true
}

func (t *tracker) list() []NodeResult {
	out := make([]NodeResult, 0, len(t.nodes))
	for _, n := range t.plan.Nodes() {
		out = append(out, t.nodes[n])
	}
	return out
}

func (t *tracker) result(done bool) *Result {
	nodes := t.list()
	c := count(nodes)
	o := classify(c)
	if !done {
		o = OutcomePending
	}
	return &Result{Rollout: t.plan.ID, Outcome: o, Counters: c, Nodes: nodes}
}

func (t *tracker) state(done bool) *proto.RolloutState {
	nodes := t.list()
	c := count(nodes)
	s := &proto.RolloutState{Rollout: t.plan.ID, CreatedAt: t.created.UnixMilli(), Strategy: "all",
		Action: t.plan.Action, State: phase(c, done), Waves: [][]string{t.plan.Nodes()},
		Nodes: proto.NodeProgressMap{}, Counters: c}
	for _, r := range nodes {
		s.Nodes[r.Node] = proto.NodeProgress{Gen: r.Gen, Toplevel: r.Toplevel, State: r.State, Error: clip(r.Detail, 512), Online: r.Online}
	}
	if done {
		s.Reason = reason(c)
	}
	return s
}

func reason(c proto.Counters) string {
	switch classify(c) {
	case OutcomeFailed:
		return "some targets failed"
	case OutcomeRolledBack:
		return "some targets rolled back"
	case OutcomePending:
		return "some targets are offline or still busy; they converge when they can"
	}
	return ""
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
