package controller

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/bustest"
	"github.com/lab-fleet/lab/internal/testbroker"
	"github.com/lab-fleet/lab/proto"
)

const (
	tlA = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-a"
	tlB = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-b"
)

func dial(t *testing.T, url, id string, onMsg func(bus.Message)) *bus.Client {
	t.Helper()
	return bustest.Dial(t, url, id, onMsg, bus.Config{})
}

// simNode answers every Desired it receives with a status in final state,
// the way labd would (after going through fetching).
func simNode(t *testing.T, b *testbroker.Broker, name string, final proto.ExecState) {
	t.Helper()
	tp := proto.DefaultTopics
	var c *bus.Client
	desired := make(chan proto.Desired, 4)
	c = dial(t, b.URL(), name, func(m bus.Message) {
		var d proto.Desired
		if proto.Decode(m.Payload, &d) == nil {
			desired <- d
		}
	})
	publish := func(m proto.Message, topic string) {
		raw, err := proto.Seal(m)
		if err != nil {
			t.Error(err)
			return
		}
		if err := c.Publish(context.Background(), topic, raw, true); err != nil {
			t.Error(err)
		}
	}
	p := &proto.Presence{Node: name, Online: true}
	p.Stamp(name, time.Now())
	publish(p, tp.NodePresence(name))
	st := &proto.NodeStatus{Node: name, Groups: []string{"web"}}
	st.Stamp(name, time.Now())
	publish(st, tp.NodeStatus(name))
	if err := c.Subscribe(context.Background(), tp.NodeDesired(name)); err != nil {
		t.Fatal(err)
	}
	go func() {
		for d := range desired {
			for _, s := range []proto.ExecState{proto.StateFetching, final} {
				st := &proto.NodeStatus{Node: name, Groups: []string{"web"},
					Execution: proto.Execution{Rollout: d.Rollout, Gen: d.Gen, Toplevel: d.Toplevel, State: s}, UpdatedAt: time.Now().UnixMilli()}
				if s.OK() {
					st.AppliedGen, st.Current = d.Gen, d.Toplevel
				}
				st.Stamp(name, time.Now())
				publish(st, tp.NodeStatus(name))
			}
		}
	}()
}

type rig struct {
	ctl   *Controller
	fleet *Fleet
	ops   *bus.Client
	b     *testbroker.Broker
}

func newRig(t *testing.T) *rig {
	b := testbroker.Start(t)
	f := NewFleet(proto.DefaultTopics, nil)
	c := dial(t, b.URL(), "ctl", func(m bus.Message) { f.Handle(m.Topic, m.Payload) })
	if err := f.Subscribe(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return &rig{ctl: New(c, f, proto.DefaultTopics, "test"), fleet: f, ops: c, b: b}
}

func TestRolloutOutcomes(t *testing.T) {
	cases := []struct {
		name    string
		finals  map[string]proto.ExecState // "" = offline node
		outcome Outcome
	}{
		{"all succeed", map[string]proto.ExecState{"n1": proto.StateSucceeded, "n2": proto.StateSucceeded}, OutcomeSucceeded},
		{"one rolls back", map[string]proto.ExecState{"n1": proto.StateSucceeded, "n2": proto.StateRolledBack}, OutcomeRolledBack},
		{"one fails", map[string]proto.ExecState{"n1": proto.StateFailed, "n2": proto.StateRolledBack}, OutcomeFailed},
		{"one offline", map[string]proto.ExecState{"n1": proto.StateSucceeded, "n2": ""}, OutcomePending},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			plan := Plan{ID: "r-1", Targets: map[string]string{}}
			for n, s := range tc.finals {
				plan.Targets[n] = tlA
				if s != "" {
					simNode(t, r.b, n, s)
				}
			}
			r.fleet.Settle(context.Background(), 200*time.Millisecond, 2*time.Second)
			var changes int
			res, err := r.ctl.Run(context.Background(), plan, Options{Timeout: 3 * time.Second, Progress: func(NodeResult) { changes++ }})
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != tc.outcome {
				t.Fatalf("outcome %s, want %s: %+v", res.Outcome, tc.outcome, res.Nodes)
			}
			if changes == 0 {
				t.Error("no progress reported")
			}
			// The retained rollout state tells any client the same outcome.
			got := make(chan proto.RolloutState, 1)
			dial(t, r.b.URL(), "watcher", func(m bus.Message) {
				var s proto.RolloutState
				if proto.Decode(m.Payload, &s) == nil {
					got <- s
				}
			}).Subscribe(context.Background(), proto.DefaultTopics.Rollout("r-1"))
			select {
			case s := <-got:
				if s.State != tc.outcome.Phase() || s.Counters.Total != len(tc.finals) {
					t.Errorf("retained rollout state %+v", s)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("no retained rollout state")
			}
		})
	}
}

func TestGenIsMonotonicAcrossControllers(t *testing.T) {
	r := newRig(t)
	future := uint64(time.Now().Add(time.Hour).UnixMilli())
	d := &proto.Desired{Node: "n1", Rollout: "old", Gen: future, Toplevel: tlB, Action: proto.ActionSwitch}
	d.Stamp("other", time.Now())
	raw, _ := proto.Seal(d)
	if err := r.ops.Publish(context.Background(), proto.DefaultTopics.NodeDesired("n1"), raw, true); err != nil {
		t.Fatal(err)
	}
	r.fleet.Settle(context.Background(), 200*time.Millisecond, 2*time.Second)
	res, err := r.ctl.Run(context.Background(), Plan{ID: "r-2", Targets: map[string]string{"n1": tlA}}, Options{NoWait: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Nodes[0].Gen != future+1 {
		t.Fatalf("gen %d, want %d", res.Nodes[0].Gen, future+1)
	}
}

func TestInvalidPlansPublishNothing(t *testing.T) {
	for _, p := range []Plan{
		{ID: "r", Targets: map[string]string{"n1": "/tmp/evil"}},
		{ID: "r", Targets: map[string]string{"N1": tlA}},
		{ID: "R!", Targets: map[string]string{"n1": tlA}},
		{ID: "r", Targets: map[string]string{}},
		{ID: "r", Targets: map[string]string{"n1": tlA}, Action: "dry-activate"},
	} {
		if err := p.Validate(); !errors.Is(err, ErrInvalidPlan) {
			t.Errorf("%+v: %v", p, err)
		}
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		c    proto.Counters
		want Outcome
	}{
		{proto.Counters{Total: 2, Succeeded: 2}, OutcomeSucceeded},
		{proto.Counters{Total: 2, Succeeded: 1, Pending: 1}, OutcomePending},
		{proto.Counters{Total: 2, Succeeded: 1, Running: 1}, OutcomePending},
		{proto.Counters{Total: 3, RolledBack: 1, Pending: 1}, OutcomeRolledBack},
		{proto.Counters{Total: 3, Failed: 1, RolledBack: 1}, OutcomeFailed},
		{proto.Counters{Total: 3, Succeeded: 1, Cancelled: 2}, OutcomeCancelled},
		{proto.Counters{Total: 3, RolledBack: 1, Cancelled: 2}, OutcomeRolledBack},
	}
	for _, c := range cases {
		if got := classify(c.c); got != c.want {
			t.Errorf("%+v: %s, want %s", c.c, got, c.want)
		}
	}
}

func TestMembersFromRetainedStatus(t *testing.T) {
	r := newRig(t)
	simNode(t, r.b, "n1", proto.StateSucceeded)
	simNode(t, r.b, "n2", proto.StateSucceeded)
	deadline := time.Now().Add(3 * time.Second)
	for len(r.fleet.Members("web")) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := r.fleet.Members("web"); len(got) != 2 || got[0] != "n1" {
		t.Fatalf("members %v", got)
	}
	if len(r.fleet.Members("db")) != 0 {
		t.Fatal("db has members")
	}
}

func TestPendingDetailSaysWhy(t *testing.T) {
	const tl = "/nix/store/mz6x2w0aq4sb8c0a5wgpvqsn3hp3kl2b-nixos-system-n1-2"
	for _, tc := range []struct {
		v    NodeView
		want string
	}{
		{NodeView{Name: "ghost"}, "never seen on this broker"},
		{NodeView{Name: "n1", Seen: true}, "offline: will converge"},
		{NodeView{Name: "n1", Seen: true, Online: true}, "online, not started"},
	} {
		r := progress(tc.v, "r-1", 7, tl)
		if !r.Pending || r.State != "" || !strings.HasPrefix(r.Detail, tc.want) {
			t.Errorf("%+v → %+v, want pending with %q", tc.v, r, tc.want)
		}
	}
}
