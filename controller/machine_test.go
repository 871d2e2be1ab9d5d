package controller

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// The rollout's transition, without a broker and without time: each case
// gives next facts one after another and checks the actions it asks for,
// written as short words (what a driver would publish, save and end).

// views is a fleet view for next: node views and group members.
type views struct {
	nodes   map[string]NodeView
	members map[string][]string
}

func (v views) Get(n string) (NodeView, bool) { nv, ok := v.nodes[n]; return nv, ok }
func (v views) Members(g string) []string     { return v.members[g] }

// sim drives next the way run does: it feeds back the gens of every
// Desired "published", and keeps the clock.
type sim struct {
	t   *testing.T
	s   *rolloutState
	now time.Time
	v   views
	gen uint64
}

var t0 = time.Date(2026, 12, 2, 12, 0, 0, 0, time.Local)

func newSim(t *testing.T, plan Plan, now time.Time) *sim {
	t.Helper()
	if err := plan.Validate(); err != nil {
		t.Fatal(err)
	}
	waves, err := plan.Waves()
	if err != nil {
		t.Fatal(err)
	}
	return &sim{t: t, s: newRolloutState(plan, waves, now), now: now, v: views{nodes: map[string]NodeView{}, members: map[string][]string{}}, gen: 100}
}

// give applies f and returns the actions in words.
func (m *sim) give(f fact) string {
	m.t.Helper()
	var words []string
	for _, a := range next(m.s, m.now, f) {
		switch a := a.(type) {
		case actPublishDesired:
			gens := map[string]uint64{}
			for _, n := range a.nodes {
				m.gen++
				gens[n] = m.gen
			}
			next(m.s, m.now, factPublished{gens})
			words = append(words, "desired "+strings.Join(a.nodes, ","))
		case actPublishGates:
			words = append(words, fmt.Sprintf("gates %d %s", a.open, a.state))
		case actClearUnstarted:
			words = append(words, "clear")
		case actReassert:
			words = append(words, "reassert")
		case actSave:
			words = append(words, map[bool]string{false: "save", true: "save-final"}[a.done])
		case actPublishState:
			words = append(words, map[bool]string{false: "state", true: "state-final"}[a.done])
		case actFlush:
			words = append(words, "flush")
		case actWave:
			if a.ev.Halted {
				words = append(words, "halted: "+a.ev.Reason)
			} else {
				words = append(words, fmt.Sprintf("wave %d/%d", a.ev.Index+1, a.ev.Total))
			}
		case actRollback:
			words = append(words, "rollback")
		case actFinish:
			words = append(words, "finish")
		case actDirty, actProgress, actLog:
		default:
			m.t.Fatalf("unknown action %T", a)
		}
	}
	return strings.Join(words, "; ")
}

// node sets n's retained status: executing this rollout's Desired (its
// gen as published) in state st; "" = online, idle.
func (m *sim) node(n string, st proto.ExecState) string {
	s := &proto.NodeStatus{Node: n}
	if st != "" {
		s.Execution = proto.Execution{Rollout: m.s.plan.ID, Gen: m.s.gens[n], State: st}
	}
	m.v.nodes[n] = NodeView{Name: n, Status: s, Online: true, Seen: true}
	return m.give(factViews{m.v})
}

func (m *sim) tick(d time.Duration) string {
	m.now = m.now.Add(d)
	return m.give(factTick{})
}

// steps is a script: each line applies one fact and states the actions
// it must produce ("" = none).
type stepCase struct {
	do   func(*sim) string
	want string
}

func play(t *testing.T, m *sim, steps []stepCase) {
	t.Helper()
	for i, st := range steps {
		if got := st.do(m); got != st.want {
			t.Fatalf("step %d:\n got: %s\nwant: %s", i+1, got, st.want)
		}
	}
}

func start(m *sim) string  { return m.give(factStart{}) }
func views0(m *sim) string { return m.give(factViews{m.v}) }
func on(n string, st proto.ExecState) func(*sim) string {
	return func(m *sim) string { return m.node(n, st) }
}
func after(d time.Duration) func(*sim) string { return func(m *sim) string { return m.tick(d) } }
func with(f fact) func(*sim) string           { return func(m *sim) string { return m.give(f) } }

func targets(names ...string) map[string]string {
	out := map[string]string{}
	for _, n := range names {
		out[n] = tlA
	}
	return out
}

var rolling1 = Strategy{Kind: StrategyRolling, Batch: Size{N: 1}}

func TestRolloutMachine(t *testing.T) {
	const (
		open1 = "gates 1 running; desired a; wave 1/3; save; state"
		open2 = "gates 2 running; desired b; wave 2/3; save; state"
		open3 = "gates 3 running; desired c; wave 3/3; save; state"
		final = "save-final; state-final; finish"
	)
	for _, c := range []struct {
		name  string
		plan  Plan
		now   time.Time
		steps []stepCase
		check func(*testing.T, *rolloutState)
	}{
		{name: "one wave: every Desired at once, ends when all ended",
			plan: Plan{ID: "r", Targets: targets("a", "b")},
			steps: []stepCase{
				{start, "desired a,b; gates 1 running; wave 1/1; save; state"},
				{views0, ""},
				{on("a", proto.StateActivating), ""},
				{on("a", proto.StateSucceeded), ""},
				{on("b", proto.StateFailed), final},
				{on("b", proto.StateSucceeded), ""}, // ended: nothing moves it
			},
			check: func(t *testing.T, s *rolloutState) {
				if r := s.result(true); r.Outcome != OutcomeFailed || r.Counters.Succeeded != 1 {
					t.Errorf("result %s %+v, want failed with one succeeded", r.Outcome, r.Counters)
				}
			}},
		{name: "rolling: one wave after another, each opened when the last ended",
			plan: Plan{ID: "r", Targets: targets("a", "b", "c"), Strategy: rolling1},
			steps: []stepCase{
				{start, "gates 1 running; desired a; wave 1/3; save; state"},
				{on("a", proto.StateSucceeded), open2},
				{on("b", proto.StateAlreadyCurrent), open3},
				{on("c", proto.StateSucceeded), final},
			}},
		{name: "gated: every Desired at start, the gates open the waves",
			plan: Plan{ID: "r", Targets: targets("a", "b"), Strategy: rolling1},
			steps: []stepCase{
				{func(m *sim) string {
					m.s.gated["a"], m.s.gated["b"], m.s.gates = true, true, []string{"g"}
					return start(m)
				}, "desired a,b; gates 1 running; wave 1/2; save; state"},
				{on("b", proto.StateQueued), ""},
				{on("a", proto.StateSucceeded), "gates 2 running; wave 2/2; save; state"},
				{on("b", proto.StateSucceeded), final},
			}},
		{name: "wave deadline: the next wave opens without the offline target, which stays pending",
			plan: Plan{ID: "r", Targets: targets("a", "b", "c"), Strategy: rolling1, WaveDeadline: time.Minute},
			steps: []stepCase{
				{start, "gates 1 running; desired a; wave 1/3; save; state"},
				{after(59 * time.Second), ""},
				{after(time.Second), open2},
				{on("b", proto.StateSucceeded), open3},
				{on("c", proto.StateSucceeded), final}, // the last wave is done; a stays pending
			},
			check: func(t *testing.T, s *rolloutState) {
				if r := s.result(true); r.Outcome != OutcomePending || r.Counters.Pending != 1 {
					t.Errorf("result %s %+v, want pending with a still pending", r.Outcome, r.Counters)
				}
			}},
		{name: "threshold: a percentage counts once min-executed targets finished",
			plan: Plan{ID: "r", Targets: targets("a", "b", "c", "d"), Strategy: rolling1, MaxFailures: Size{Percent: 50}, MinExecuted: 2},
			steps: []stepCase{
				{start, "gates 1 running; desired a; wave 1/4; save; state"},
				{on("a", proto.StateFailed), "gates 2 running; desired b; wave 2/4; save; state"},    // 1 of 1 failed, but only 1 finished
				{on("b", proto.StateSucceeded), "gates 3 running; desired c; wave 3/4; save; state"}, // 1 of 2: not more than 50%
				{on("c", proto.StateTimedOut), "halted: 2 of 3 finished targets failed, more than max failures 50%; gates 3 cancelled; clear; " + final},
			},
			check: func(t *testing.T, s *rolloutState) {
				r := s.result(true)
				if !r.Halted || r.Counters.Cancelled != 1 || r.Outcome != OutcomeFailed {
					t.Errorf("result halted=%v %s %+v, want halted, failed, d cancelled", r.Halted, r.Outcome, r.Counters)
				}
			}},
		{name: "threshold in a wave still running: the halt waits for the wave, then rolls back",
			plan: Plan{ID: "r", Targets: targets("a", "b", "c"), OnFailure: OnFailureRollback},
			steps: []stepCase{
				{start, "desired a,b,c; gates 1 running; wave 1/1; save; state"},
				{on("a", proto.StateSucceeded), ""},
				{on("c", proto.StateActivating), ""},
				{on("b", proto.StateFailed), "halted: 1 of 2 finished targets failed, more than max failures 0; gates 1 cancelled; clear"},
				{on("c", proto.StateSucceeded), "save-final; state-final; rollback; save-final; finish"},
			},
			check: func(t *testing.T, s *rolloutState) {
				if !s.rollingBack || !s.record(t0, true).RollingBack {
					t.Error("the record does not say the way back runs")
				}
				next(s, t0, factRolledBack{})
				if s.rollingBack {
					t.Error("still rolling back after the way back ended")
				}
			}},
		{name: "pause: the next wave waits, even past its deadline, until resumed",
			plan: Plan{ID: "r", Targets: targets("a", "b", "c"), Strategy: rolling1, WaveDeadline: time.Minute},
			steps: []stepCase{
				{start, "gates 1 running; desired a; wave 1/3; save; state"},
				{with(factPause{"alice"}), "flush"},
				{on("a", proto.StateSucceeded), ""},
				{after(time.Hour), ""},
				{with(factResume{"alice"}), "flush; " + open2},
			}},
		{name: "cancelled elsewhere: no further wave, no rollback, ends when the running ones did",
			plan: Plan{ID: "r", Targets: targets("a", "b", "c"), Strategy: rolling1, OnFailure: OnFailureRollback},
			steps: []stepCase{
				{start, "gates 1 running; desired a; wave 1/3; save; state"},
				{on("a", proto.StateActivating), ""},
				{with(factCancelled{"bob"}), "halted: cancelled by bob"},
				{with(factCancelled{"carol"}), ""},
				{on("a", proto.StateSucceeded), final},
			},
			check: func(t *testing.T, s *rolloutState) {
				if r := s.result(true); r.Reason != "cancelled by bob" || r.Counters.Cancelled != 2 {
					t.Errorf("result %q %+v, want cancelled by bob with b and c cancelled", r.Reason, r.Counters)
				}
			}},
		{name: "scheduled and cancelled before its time: nothing is published",
			plan: Plan{ID: "r", Targets: targets("a"), NotBefore: t0.Add(time.Hour)},
			steps: []stepCase{
				{start, "state"},
				{views0, ""},
				{func(m *sim) string {
					if d := m.s.nodes["a"].Detail; !strings.HasPrefix(d, "scheduled: not before ") {
						m.t.Errorf("a scheduled target's detail %q, want scheduled: not before …", d)
					}
					return m.tick(time.Minute)
				}, ""},
				{with(factCancelled{"bob"}), "halted: cancelled by bob; " + final},
			}},
		{name: "window: nothing before it opens; a wave under way finishes; the next waits for the next night",
			plan: Plan{ID: "r", Targets: targets("a", "b", "c"), Strategy: rolling1, Window: Window{Set: true, From: 2 * 60, To: 5 * 60}},
			now:  time.Date(2026, 12, 2, 1, 0, 0, 0, time.Local),
			steps: []stepCase{
				{start, "state"},
				{after(59 * time.Minute), ""},
				{after(time.Minute), "gates 1 running; desired a; wave 1/3; save; state"}, // 02:00
				{on("a", proto.StateSucceeded), open2},
				{after(3 * time.Hour), ""}, // 05:00: closed, b still running
				{on("b", proto.StateSucceeded), ""},
				{after(20 * time.Hour), ""}, // 01:00 the next day
				{after(time.Hour), open3},   // 02:00
				{on("c", proto.StateSucceeded), final},
			}},
		{name: "broker back after a reconnect: what it lost is published again",
			plan: Plan{ID: "r", Targets: targets("a")},
			steps: []stepCase{
				{start, "desired a; gates 1 running; wave 1/1; save; state"},
				{with(factBrokerBack{t0}), "reassert"},
				{on("a", proto.StateSucceeded), final},
			}},
		{name: "overall timeout ends it with targets pending",
			plan: Plan{ID: "r", Targets: targets("a")},
			steps: []stepCase{
				{start, "desired a; gates 1 running; wave 1/1; save; state"},
				{with(factTimeout{}), final},
				{with(factBrokerBack{t0}), ""},
			}},
		{name: "a node that joins a targeted group becomes a target of the current wave",
			plan: Plan{ID: "r", Targets: targets("a"), Groups: map[string]string{"kiosk": tlA}},
			steps: []stepCase{
				{start, "desired a; gates 1 running; wave 1/1; save; state"},
				{func(m *sim) string { m.v.members["kiosk"] = []string{"a", "new"}; return views0(m) }, "desired new; save"},
				{on("a", proto.StateSucceeded), ""},
				{on("new", proto.StateSucceeded), final},
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			now := c.now
			if now.IsZero() {
				now = t0
			}
			m := newSim(t, c.plan, now)
			play(t, m, c.steps)
			if c.check != nil {
				c.check(t, m.s)
			}
		})
	}
}

// A controller restarted with a record: what the broker lost and what was
// never published goes out, the open wave's gates again.
func TestRolloutMachineResume(t *testing.T) {
	for _, c := range []struct {
		name    string
		opened  int
		gens    map[string]uint64
		pending bool
		now     time.Time
		want    string
	}{
		{"stopped before the first publish", 0, nil, false, t0,
			"reassert; gates 1 running; desired a; wave 1/2; save; state"},
		{"stopped between saving and publishing wave 2", 2, map[string]uint64{"a": 5}, false, t0,
			"reassert; desired b; gates 2 running"},
		{"wave 2 published", 2, map[string]uint64{"a": 5, "b": 6}, false, t0, "reassert; gates 2 running"},
		{"pending: the open wave gets a new deadline", 2, map[string]uint64{"a": 5, "b": 6}, true, t0.Add(time.Hour), "reassert; gates 2 running"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newSim(t, Plan{ID: "r", Targets: targets("a", "b"), Strategy: rolling1}, t0)
			m.s.opened, m.s.openedAt, m.now = c.opened, t0, c.now
			for n, g := range c.gens {
				m.s.gens[n] = g
			}
			if got := m.give(factResumed{pending: c.pending}); got != c.want {
				t.Fatalf("got:  %s\nwant: %s", got, c.want)
			}
			if !m.s.begun || m.s.openedAt != later(t0, c.now) && c.pending {
				t.Errorf("begun %v, opened at %s", m.s.begun, m.s.openedAt)
			}
		})
	}
	m := newSim(t, Plan{ID: "r", Targets: targets("a"), NotBefore: t0.Add(time.Hour)}, t0)
	if got := m.give(factResumed{}); got != "" || m.s.begun {
		t.Errorf("a scheduled rollout resumed before its time: %q, begun %v", got, m.s.begun)
	}
	if got := m.tick(time.Hour); got != "desired a; gates 1 running; wave 1/1; save; state" {
		t.Errorf("at its time: %q", got)
	}
}

// The state the record and the retained RolloutState derive from.
func TestRolloutMachineRecordAndState(t *testing.T) {
	m := newSim(t, Plan{ID: "r", Targets: targets("a", "b", "c"), Strategy: rolling1}, t0)
	m.give(factStart{})
	m.node("a", proto.StateSucceeded)
	m.give(factPause{"alice"})
	rec := m.s.record(m.now, false)
	if rec.Opened != 2 || rec.Paused != "alice" || rec.Gens["b"] == 0 || rec.Gens["c"] != 0 || rec.State != proto.RolloutRunning {
		t.Errorf("record: opened %d, paused %q, gens %v, %s", rec.Opened, rec.Paused, rec.Gens, rec.State)
	}
	rs := m.s.state(false)
	if rs.OpenWave != 2 || !strings.Contains(rs.Reason, "paused by alice") || rs.Nodes["a"].State != proto.StateSucceeded {
		t.Errorf("state: open wave %d, reason %q, a %s", rs.OpenWave, rs.Reason, rs.Nodes["a"].State)
	}
	if !slices.Equal(rs.Waves[1], []string{"b"}) {
		t.Errorf("waves %v", rs.Waves)
	}
}
