package controller

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/proto"
)

// gateNode simulates labd's wave semantics (the real ones are tested in
// node/ and integration/): it acts on a Desired when its wave is 0 or a
// running gate of one of its groups has opened it, reports cancelled when a
// gate cancels its rollout first, and records the order in which nodes
// acted.
type gateNode struct {
	name   string
	groups []string
	final  proto.ExecState
	log    *switchLog

	mu      sync.Mutex
	c       *bus.Client
	d       *proto.Desired
	gates   map[string]proto.Gate
	acted   map[uint64]bool
	current string
	prev    string
}

type switchLog struct {
	mu    sync.Mutex
	order []string
}

func (l *switchLog) add(s string) { l.mu.Lock(); l.order = append(l.order, s); l.mu.Unlock() }
func (l *switchLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.order)
}

func startGateNode(t *testing.T, r *rig, log *switchLog, name string, groups []string, final proto.ExecState) *gateNode {
	t.Helper()
	g := &gateNode{name: name, groups: groups, final: final, log: log, gates: map[string]proto.Gate{}, acted: map[uint64]bool{}, current: tlB}
	g.c = dial(t, r.b.URL(), name, g.receive)
	tp := proto.DefaultTopics
	p := &proto.Presence{Node: name, Online: true}
	p.Stamp(name, time.Now())
	g.publish(p, tp.NodePresence(name))
	g.status(proto.Execution{State: proto.StateIdle}, 0)
	filters := []string{tp.NodeDesired(name)}
	for _, gr := range groups {
		filters = append(filters, tp.GroupGate(gr))
	}
	if err := g.c.Subscribe(context.Background(), filters...); err != nil {
		t.Fatal(err)
	}
	return g
}

func (g *gateNode) publish(m proto.Message, topic string) {
	raw, err := proto.Seal(m)
	if err == nil {
		_ = g.c.Publish(context.Background(), topic, raw, true)
	}
}

func (g *gateNode) status(e proto.Execution, applied uint64) {
	st := &proto.NodeStatus{Node: g.name, Groups: g.groups, Execution: e, AppliedGen: applied, Current: g.current, Previous: g.prev, UpdatedAt: time.Now().UnixMilli()}
	st.Stamp(g.name, time.Now())
	g.publish(st, proto.DefaultTopics.NodeStatus(g.name))
}

func (g *gateNode) receive(m bus.Message) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var d proto.Desired
	var gt proto.Gate
	switch {
	case proto.Decode(m.Payload, &d) == nil:
		g.d = &d
	case proto.Decode(m.Payload, &gt) == nil:
		g.gates[gt.Group] = gt
	default:
		return
	}
	if g.d == nil || g.acted[g.d.Gen] {
		return
	}
	d = *g.d
	exec := proto.Execution{Rollout: d.Rollout, Gen: d.Gen, Toplevel: d.Toplevel}
	open := d.Wave == 0
	for _, gr := range g.groups {
		gate, ok := g.gates[gr]
		if !ok || gate.Rollout != d.Rollout {
			continue
		}
		if gate.State == proto.GateCancelled {
			g.acted[d.Gen] = true
			exec.State = proto.StateCancelled
			g.status(exec, 0)
			return
		}
		if gate.State == proto.GateRunning && gate.OpenWave >= d.Wave {
			open = true
		}
	}
	if !open {
		exec.State = proto.StateQueued
		g.status(exec, 0)
		return
	}
	g.acted[d.Gen] = true
	g.log.add(g.name)
	final := g.final
	if d.Rollout != "" && strings.HasSuffix(d.Rollout, "-rollback") {
		final = proto.StateSucceeded
	}
	exec.State = proto.StateFetching
	g.status(exec, 0)
	exec.State = final
	if final.OK() {
		g.prev, g.current = g.current, d.Toplevel
		g.status(exec, d.Gen)
		return
	}
	g.status(exec, 0)
}

func TestWaves(t *testing.T) {
	ok, bad := proto.StateSucceeded, proto.StateRolledBack
	web := []string{"web"}
	cases := []struct {
		name     string
		nodes    map[string]proto.ExecState // "" = offline
		groups   map[string][]string        // default web
		plan     Plan
		outcome  Outcome
		halted   bool
		acted    []string // in order
		states   map[string]proto.ExecState
		rollback []string // targets switched back by --on-failure rollback
	}{
		{name: "rolling batch 1 goes one by one", nodes: map[string]proto.ExecState{"a": ok, "b": ok, "c": ok},
			plan:    Plan{Strategy: Strategy{Kind: StrategyRolling, Batch: Size{N: 1}}},
			outcome: OutcomeSucceeded, acted: []string{"a", "b", "c"}},
		{name: "canary failure halts before wave 2", nodes: map[string]proto.ExecState{"a": bad, "b": ok, "c": ok},
			plan:    Plan{Strategy: Strategy{Kind: StrategyCanary}},
			outcome: OutcomeRolledBack, halted: true, acted: []string{"a"},
			states: map[string]proto.ExecState{"a": bad, "b": proto.StateCancelled, "c": proto.StateCancelled}},
		{name: "tolerated failure does not halt", nodes: map[string]proto.ExecState{"a": bad, "b": ok, "c": ok},
			plan:    Plan{Strategy: Strategy{Kind: StrategyRolling, Batch: Size{N: 1}}, MaxFailures: Size{N: 1}},
			outcome: OutcomeRolledBack, acted: []string{"a", "b", "c"}},
		{name: "percentage counts after min executed", nodes: map[string]proto.ExecState{"a": bad, "b": ok, "c": bad, "d": ok, "e": ok},
			plan:    Plan{Strategy: Strategy{Kind: StrategyRolling, Batch: Size{N: 1}}, MaxFailures: Size{Percent: 50}, MinExecuted: 2},
			outcome: OutcomeRolledBack, halted: true, acted: []string{"a", "b", "c"},
			states: map[string]proto.ExecState{"d": proto.StateCancelled, "e": proto.StateCancelled}},
		{name: "dependencies go first", nodes: map[string]proto.ExecState{"app": ok, "db": ok, "cache": ok},
			plan:    Plan{Machines: map[string]Machine{"app": {Dependencies: []string{"db"}}, "db": {Dependencies: []string{"cache"}}}},
			outcome: OutcomeSucceeded, acted: []string{"cache", "db", "app"}},
		{name: "offline node: wave moves on after its deadline", nodes: map[string]proto.ExecState{"a": "", "b": ok, "c": ok},
			plan:    Plan{Strategy: Strategy{Kind: StrategyRolling, Batch: Size{N: 2}}, WaveDeadline: 1500 * time.Millisecond},
			outcome: OutcomePending, acted: []string{"b", "c"}},
		{name: "nodes without groups get their Desired when their wave opens", nodes: map[string]proto.ExecState{"a": ok, "b": ok},
			groups:  map[string][]string{"a": nil, "b": nil},
			plan:    Plan{Strategy: Strategy{Kind: StrategyCanary}},
			outcome: OutcomeSucceeded, acted: []string{"a", "b"}},
		{name: "on-failure rollback switches the succeeded back", nodes: map[string]proto.ExecState{"a": ok, "b": bad, "c": ok},
			plan:    Plan{Strategy: Strategy{Kind: StrategyRolling, Batch: Size{N: 1}}, OnFailure: OnFailureRollback},
			outcome: OutcomeRolledBack, halted: true, acted: []string{"a", "b", "a"}, rollback: []string{"a"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			log := &switchLog{}
			plan := tc.plan
			plan.ID, plan.Targets = "r-w", map[string]string{}
			for n, s := range tc.nodes {
				plan.Targets[n] = tlA
				gr := web
				if g, ok := tc.groups[n]; ok {
					gr = g
				}
				if s != "" {
					startGateNode(t, r, log, n, gr, s)
				}
			}
			r.fleet.Settle(context.Background(), 200*time.Millisecond, 2*time.Second)
			var waves []WaveEvent
			res, err := r.ctl.Run(context.Background(), plan, Options{Timeout: 20 * time.Second, OnWave: func(e WaveEvent) { waves = append(waves, e) }})
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != tc.outcome || res.Halted != tc.halted {
				t.Fatalf("outcome %s halted %v (%s), want %s halted %v: %+v", res.Outcome, res.Halted, res.Reason, tc.outcome, tc.halted, res.Nodes)
			}
			if got := log.list(); !slices.Equal(got, tc.acted) {
				t.Errorf("nodes acted in order %v, want %v", got, tc.acted)
			}
			for _, n := range res.Nodes {
				if want, ok := tc.states[n.Node]; ok && n.State != want {
					t.Errorf("%s ended %s (%s), want %s", n.Node, n.State, n.Detail, want)
				}
			}
			if len(waves) == 0 || waves[0].Index != 0 {
				t.Errorf("wave events %+v", waves)
			}
			if tc.rollback != nil {
				if res.Rollback == nil {
					t.Fatal("no rollback rollout")
				}
				var got []string
				for _, n := range res.Rollback.Nodes {
					got = append(got, n.Node)
					if n.Toplevel != tlB || n.State != proto.StateSucceeded {
						t.Errorf("rollback of %s: %+v", n.Node, n)
					}
				}
				if !slices.Equal(got, tc.rollback) {
					t.Errorf("rolled back %v, want %v", got, tc.rollback)
				}
			}
		})
	}
}

// A node that joins a targeted group while the rollout runs becomes a
// target of the current wave.
func TestJoinerOfATargetedGroupConverges(t *testing.T) {
	r := newRig(t)
	log := &switchLog{}
	startGateNode(t, r, log, "a", []string{"web"}, proto.StateSucceeded)
	// b is known but offline: its wave waits, which keeps the rollout open.
	st := &proto.NodeStatus{Node: "b", Groups: []string{"web"}}
	st.Stamp("b", time.Now())
	raw, _ := proto.Seal(st)
	if err := r.ops.Publish(context.Background(), proto.DefaultTopics.NodeStatus("b"), raw, true); err != nil {
		t.Fatal(err)
	}
	r.fleet.Settle(context.Background(), 200*time.Millisecond, 2*time.Second)
	plan := Plan{ID: "r-join", Targets: map[string]string{"a": tlA, "b": tlA}, Groups: map[string]string{"web": tlA}, WaveDeadline: 3 * time.Second}
	done := make(chan *Result, 1)
	go func() {
		res, err := r.ctl.Run(context.Background(), plan, Options{Timeout: 20 * time.Second})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	eventually(t, 5*time.Second, func() bool { return slices.Contains(log.list(), "a") })
	startGateNode(t, r, log, "late", []string{"web"}, proto.StateSucceeded)
	res := <-done
	if res == nil {
		t.Fatal("no result")
	}
	var late *NodeResult
	for i := range res.Nodes {
		if res.Nodes[i].Node == "late" {
			late = &res.Nodes[i]
		}
	}
	if late == nil || late.State != proto.StateSucceeded {
		t.Fatalf("the late joiner is not a succeeded target: %+v", res.Nodes)
	}
	if !slices.Contains(log.list(), "late") {
		t.Error("the late joiner never acted")
	}
}
