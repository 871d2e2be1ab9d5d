package controller

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// rolloutState is one rollout: everything known of it, and the only
// thing its transition (next, machine.go) changes. The persisted Record
// (record) and the retained RolloutState (state) are derived from it.
// Each target's progress is recomputed from the fleet's view (update): the
// latest retained status decides, whatever was missed.
type rolloutState struct {
	plan      Plan
	created   time.Time
	waves     [][]string
	wave      map[string]int // node → its wave index
	opened    int            // waves opened so far
	openedAt  time.Time      // when the last one opened
	begun     bool           // the first wave was published (a scheduled rollout waits for its time)
	halted    bool
	cancelled bool   // halted by labctl rollout cancel
	paused    string // who paused it (no further wave opens); "" = not paused
	reason    string
	gens      map[string]uint64
	nodes     map[string]NodeResult
	// gated holds the targets opened by a group gate (their Desired is
	// published at start); gates are the groups whose gates open them.
	gated map[string]bool
	gates []string
	keyID string // the key that signed the Desired states ("" unsigned)
	// submitter is who submitted it to a controller service ("": run by labctl).
	submitter string
	// signed holds the Desired states the operator signed, sealed, by
	// node (a submitted rollout: the controller cannot sign them); nil =
	// signed by the run with its key. rollback holds the signed way back
	// of each target (--on-failure rollback).
	signed, rollback map[string][]byte
	// cancelledBy is who cancelled it elsewhere (a fact not yet acted on).
	cancelledBy string
	outside     bool // a wave waits for the maintenance window (said once)
	ended       bool // finished: no fact changes it any more
	rollingBack bool // ended, and its way back (--on-failure rollback) runs
}

func newRolloutState(p Plan, waves [][]string, now time.Time) *rolloutState {
	t := &rolloutState{plan: p, created: now, waves: waves, wave: map[string]int{}, gens: map[string]uint64{}, nodes: map[string]NodeResult{}, gated: map[string]bool{}}
	for i, w := range waves {
		for _, n := range w {
			t.wave[n] = i
		}
	}
	return t
}

// open records that wave i opened at now.
func (t *rolloutState) open(i int, now time.Time) {
	t.opened, t.openedAt = i+1, now
}

// adoptTarget adds a target to the current wave.
func (t *rolloutState) adoptTarget(n, toplevel string) {
	i := t.opened - 1
	t.waves[i] = append(slices.Clone(t.waves[i]), n)
	t.wave[n] = i
	t.plan.Targets[n] = toplevel
}

// halt stops further waves; targets of waves not opened are cancelled.
func (t *rolloutState) halt(reason string) {
	t.halted, t.reason = true, reason
	for i := t.opened; i < len(t.waves); i++ {
		for _, n := range t.waves[i] {
			t.nodes[n] = NodeResult{Node: n, Wave: i + 1, Toplevel: t.plan.Targets[n], State: proto.StateCancelled,
				Detail: t.notStarted()}
		}
	}
}

// notStarted explains why a target never started.
func (t *rolloutState) notStarted() string {
	if t.cancelled {
		return "not started: " + t.reason
	}
	return "not started: the rollout halted (" + t.reason + ")"
}

// waveDone reports whether the last opened wave is over: every target in
// it finished, or the wave deadline passed (the rest stay pending).
func (t *rolloutState) waveDone(now time.Time) bool {
	if t.opened == 0 {
		return false
	}
	if now.Sub(t.openedAt) >= t.plan.WaveDeadline {
		return true
	}
	for _, n := range t.waves[t.opened-1] {
		r, ok := t.nodes[n]
		if !ok {
			r = NodeResult{Pending: true} // not yet looked at
		}
		// Once halted, a target that never started will not: its gate
		// says cancelled. Only the ones already running are waited for.
		if r.Pending && !(t.halted && r.State == "") {
			return false
		}
	}
	return true
}

// failures counts finished targets and the failures among them.
func (t *rolloutState) failures() (failed, finished int) {
	for _, r := range t.nodes {
		if r.Pending || r.State == "" || r.State == proto.StateCancelled {
			continue
		}
		finished++
		if !r.State.OK() {
			failed++
		}
	}
	return failed, finished
}

// exceeded reports whether the failures cross the plan's threshold.
func (t *rolloutState) exceeded() bool {
	failed, finished := t.failures()
	if failed == 0 {
		return false
	}
	m := t.plan.MaxFailures
	if m.Percent > 0 {
		if finished < min(t.plan.MinExecuted, len(t.plan.Targets)) {
			return false
		}
		return float64(failed)*100 > m.Percent*float64(finished)
	}
	return failed > m.N
}

func (t *rolloutState) failureReason() string {
	failed, finished := t.failures()
	return fmt.Sprintf("%d of %d finished targets failed, more than %s %s", failed, finished, FieldMaxFailures, t.plan.MaxFailures)
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
	if ev := v.LastEvent; r.State == proto.StateQueued && ev != nil && ev.State == proto.StateRejected && ev.Rollout == rollout {
		// Queued for a wave whose gate it refused (unsigned, unknown key):
		// it waits until a gate it accepts opens the wave.
		r.Detail = "queued, but it rejected the gate that opens its wave: " + ev.Detail
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
func (t *rolloutState) update(f viewer, onChange func(NodeResult)) bool {
	changed := false
	for _, n := range t.plan.Nodes() {
		if t.wave[n] >= t.opened && t.halted {
			continue // cancelled before its wave opened
		}
		v, _ := f.Get(n)
		r := progress(v, t.plan.ID, t.gens[n], t.plan.Targets[n])
		r.Wave = t.wave[n] + 1
		if r.Pending && r.State == "" && t.wave[n] >= t.opened {
			r.Detail = fmt.Sprintf("waiting for wave %d", r.Wave)
			if t.opened == 0 && (!t.plan.NotBefore.IsZero() || t.plan.Window.Set) {
				r.Detail = "scheduled: " + t.plan.schedule()
			}
		}
		old, seen := t.nodes[n]
		if seen && !old.Pending && old.State != "" {
			// A target's end in this rollout is final: a node that moved
			// on to a later rollout keeps the result it had here.
			if old.Online != r.Online {
				old.Online, changed = r.Online, true
				t.nodes[n] = old
			}
			continue
		}
		if !seen || old.State != r.State || old.Online != r.Online || (r.State == proto.StateQueued && old.Detail != r.Detail) {
			changed = true
			if onChange != nil && (seen || r.State != "") {
				onChange(r)
			}
		}
		t.nodes[n] = r
	}
	return changed
}

func (t *rolloutState) list() []NodeResult {
	out := make([]NodeResult, 0, len(t.nodes))
	for _, n := range t.plan.Nodes() {
		r, ok := t.nodes[n]
		if !ok {
			r = NodeResult{Node: n, Wave: t.wave[n] + 1, Gen: t.gens[n], Toplevel: t.plan.Targets[n], Pending: true}
		}
		out = append(out, r)
	}
	return out
}

func (t *rolloutState) result(done bool) *Result {
	nodes := t.list()
	if done && t.halted {
		for i, n := range nodes {
			if n.Pending && n.State == "" {
				nodes[i].State, nodes[i].Pending = proto.StateCancelled, false
				nodes[i].Detail = t.notStarted()
			}
		}
	}
	c := count(nodes)
	o := classify(c)
	if !done {
		o = OutcomePending
	}
	return &Result{Rollout: t.plan.ID, Outcome: o, Counters: c, Nodes: nodes, Waves: t.waves, Halted: t.halted, Reason: t.reason}
}

// record is the rollout's state for the store, as of now.
func (t *rolloutState) record(now time.Time, done bool) *Record {
	rec := &Record{Plan: t.plan, Waves: t.waves, Gates: t.gates, Gens: maps.Clone(t.gens), Opened: t.opened, OpenedAt: t.openedAt,
		Created: t.created, Updated: now, State: proto.RolloutRunning, Reason: t.reason, KeyID: t.keyID, Result: t.result(done),
		Submitter: t.submitter, Signed: t.signed, Rollback: t.rollback, Paused: t.paused, RollingBack: t.rollingBack}
	for n := range t.gated {
		rec.Gated = append(rec.Gated, n)
	}
	slices.Sort(rec.Gated)
	if done {
		rec.State = rec.Result.Outcome.Phase()
	}
	return rec
}

func (t *rolloutState) state(done bool) *proto.RolloutState {
	nodes := t.result(done).Nodes
	c := count(nodes)
	strategy := t.plan.Strategy.Kind
	if strategy == "" {
		strategy = StrategyAll
	}
	s := &proto.RolloutState{Rollout: t.plan.ID, CreatedAt: t.created.UnixMilli(), Strategy: strategy,
		Action: t.plan.Action, State: phase(c, done), OpenWave: t.opened, Waves: t.waves,
		Nodes: proto.NodeProgressMap{}, Counters: c, Halted: t.halted}
	for _, r := range nodes {
		s.Nodes[r.Node] = proto.NodeProgress{Gen: r.Gen, Toplevel: r.Toplevel, State: r.State, Error: clip(r.Detail, 512), Online: r.Online}
	}
	switch {
	case t.halted:
		s.Reason = t.reason
	case t.paused != "" && !done:
		s.Reason = "paused by " + t.paused + ": no further wave opens until it is resumed"
	case done:
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
