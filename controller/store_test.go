package controller

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

func TestStoreRoundTrip(t *testing.T) {
	s, err := OpenStore(filepath.Join(t.TempDir(), "sub", "rollouts.db"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for i, id := range []string{"r-old", "r-new"} {
		rec := &Record{Plan: Plan{ID: id, Targets: map[string]string{"n1": tlA}, Strategy: Strategy{Kind: StrategyCanary, Batch: Size{Percent: 25}}},
			Waves: [][]string{{"n1"}}, Gens: map[string]uint64{"n1": 7}, Created: t0.Add(time.Duration(i) * time.Hour), State: proto.RolloutRunning}
		if err := s.Save(rec); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Get("r-old")
	if err != nil {
		t.Fatal(err)
	}
	if got.Plan.Strategy.Batch.Percent != 25 || got.Gens["n1"] != 7 || got.Plan.Targets["n1"] != tlA || got.Done() {
		t.Fatalf("round trip lost data: %+v", got)
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Plan.ID != "r-new" {
		t.Fatalf("list not newest first: %v", list)
	}
	if _, err := s.Get("r-none"); !errors.Is(err, ErrNoRollout) {
		t.Fatalf("unknown id: %v", err)
	}
}

// A controller that stops mid-rollout (Ctrl-C, crash) leaves a record that
// another one resumes: the waves already done are not run again and the
// rest follow in order.
func TestResumeAfterInterrupt(t *testing.T) {
	r := newRig(t)
	log := &actLog{}
	plan := Plan{ID: "r-res", Targets: map[string]string{}, Strategy: Strategy{Kind: StrategyRolling, Batch: Size{N: 1}}}
	for _, n := range []string{"a", "b", "c"} {
		plan.Targets[n] = tlA
		startGateNode(t, r, log, n, []string{"web"}, proto.StateSucceeded)
	}
	r.fleet.Settle(context.Background(), 200*time.Millisecond, 2*time.Second)
	store, err := OpenStore(filepath.Join(t.TempDir(), "rollouts.db"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	_, err = r.ctl.Run(ctx, plan, Options{Store: store, Timeout: 20 * time.Second, OnWave: func(e WaveEvent) {
		if e.Index == 1 {
			stop() // interrupted right after opening wave 2
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	rec, err := store.Get("r-res")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Done() || rec.Opened != 2 {
		t.Fatalf("record after interrupt: state %s opened %d", rec.State, rec.Opened)
	}
	res, err := r.ctl.Resume(context.Background(), rec, Options{Store: store, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != OutcomeSucceeded {
		t.Fatalf("outcome %s: %+v", res.Outcome, res.Nodes)
	}
	if got := log.list(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("acted %v, want each once in order", got)
	}
	rec, _ = store.Get("r-res")
	if !rec.Done() || rec.State != proto.RolloutSucceeded {
		t.Errorf("final record %s", rec.State)
	}
	if _, err := r.ctl.Resume(context.Background(), rec, Options{}); err == nil {
		t.Error("resumed a finished rollout")
	}
}

// labctl rollout cancel, from another process, stops a rollout that is
// being followed: no further wave opens and the follower reports it.
func TestCancelFromElsewhere(t *testing.T) {
	r := newRig(t)
	log := &actLog{}
	plan := Plan{ID: "r-can", Targets: map[string]string{"a": tlA, "b": tlA, "c": tlA},
		Strategy: Strategy{Kind: StrategyRolling, Batch: Size{N: 1}}, WaveDeadline: time.Minute}
	// a is offline: wave 1 waits for it, which leaves time to cancel.
	startGateNode(t, r, log, "b", []string{"web"}, proto.StateSucceeded)
	startGateNode(t, r, log, "c", []string{"web"}, proto.StateSucceeded)
	st := &proto.NodeStatus{Node: "a", Groups: []string{"web"}}
	st.Stamp("a", time.Now())
	raw, _ := proto.Seal(st)
	if err := r.ops.Publish(context.Background(), proto.DefaultTopics.NodeStatus("a"), raw, true); err != nil {
		t.Fatal(err)
	}
	r.fleet.Settle(context.Background(), 200*time.Millisecond, 2*time.Second)
	store, err := OpenStore(filepath.Join(t.TempDir(), "rollouts.db"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan *Result, 1)
	go func() {
		res, err := r.ctl.Run(context.Background(), plan, Options{Store: store, Timeout: 30 * time.Second})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	var rec *Record
	eventually(t, 5*time.Second, func() bool {
		rec, err = store.Get("r-can")
		return err == nil && rec.Opened == 1
	})
	canceller := New(r.ops, r.fleet, proto.DefaultTopics, "canceller")
	if err := canceller.Cancel(context.Background(), rec, Options{Store: store}); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if !res.Halted || res.Reason != "cancelled by canceller" {
			t.Errorf("follower ended halted=%v reason=%q", res.Halted, res.Reason)
		}
		for _, n := range res.Nodes {
			if n.State != proto.StateCancelled {
				t.Errorf("%s: %s", n.Node, n.State)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the follower did not notice the cancel")
	}
	if got := log.list(); len(got) != 0 {
		t.Errorf("nodes acted after cancel: %v", got)
	}
	rec, _ = store.Get("r-can")
	if rec.State != proto.RolloutCancelled {
		t.Errorf("record state %s", rec.State)
	}
}

func eventually(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
