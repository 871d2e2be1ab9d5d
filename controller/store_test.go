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
	log := &switchLog{}
	plan := Plan{ID: "r-res", Targets: map[string]string{}, Strategy: Strategy{Kind: StrategyRolling, Batch: Size{N: 1}}}
	for _, n := range []string{"a", "b", "c"} {
		plan.Targets[n] = tlA
		startGateNode(t, r, log, n, []string{"web"}, proto.StateSucceeded)
	}
	r.fleet.Settle(context.Background(), 200*time.Millisecond, 2*time.Second)
	store := tempStore(t)
	ctx, stop := context.WithCancel(context.Background())
	_, err := r.ctl.Run(ctx, plan, Options{Store: store, Timeout: 20 * time.Second, OnWave: func(e WaveEvent) {
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
	log := &switchLog{}
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
	store := tempStore(t)
	done := make(chan *Result, 1)
	go func() {
		res, err := r.ctl.Run(context.Background(), plan, Options{Store: store, Timeout: 30 * time.Second})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	var (
		rec *Record
		err error
	)
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

// Issue 13.4: an id is a rollout's for good. Reusing it is refused before
// anything is published, and the earlier record is kept as it was.
func TestRolloutIDIsNotReused(t *testing.T) {
	r := newRig(t)
	simNode(t, r.b, "n1", proto.StateSucceeded)
	r.fleet.Settle(context.Background(), 200*time.Millisecond, 2*time.Second)
	store := tempStore(t)
	plan := Plan{ID: "r-once", Targets: map[string]string{"n1": tlA}}
	if _, err := r.ctl.Run(context.Background(), plan, Options{Store: store, Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	first, _ := store.Get("r-once")
	again := Plan{ID: "r-once", Targets: map[string]string{"n1": tlB}}
	if _, err := r.ctl.Run(context.Background(), again, Options{Store: store, Timeout: 10 * time.Second}); !errors.Is(err, ErrRolloutExists) {
		t.Fatalf("second rollout with the same id: %v, want ErrRolloutExists", err)
	}
	// Another operator's records (a fresh store) still see it on the broker.
	other := tempStore(t)
	if _, err := r.ctl.Run(context.Background(), again, Options{Store: other, Timeout: 10 * time.Second}); !errors.Is(err, ErrRolloutExists) {
		t.Fatalf("same id from another store: %v, want ErrRolloutExists", err)
	}
	kept, _ := store.Get("r-once")
	if kept.Plan.Targets["n1"] != tlA || !kept.Updated.Equal(first.Updated) {
		t.Errorf("the first record changed: %+v", kept.Plan.Targets)
	}
	if v, _ := r.fleet.Get("n1"); v.DesiredGen != first.Gens["n1"] {
		t.Errorf("a Desired was published for the refused rollout: gen %d, recorded %d", v.DesiredGen, first.Gens["n1"])
	}
}

// Issue 13.2: a rollout followed to its end with a target offline is
// recorded pending, not succeeded: resume is allowed, follows it again for
// a wave deadline, and records succeeded once that target converged.
func TestPendingRolloutIsRecordedPendingAndResumes(t *testing.T) {
	r := newRig(t)
	simNode(t, r.b, "n1", proto.StateSucceeded)
	r.fleet.Settle(context.Background(), 200*time.Millisecond, 2*time.Second)
	store := tempStore(t)
	plan := Plan{ID: "r-pend", Targets: map[string]string{"n1": tlA, "n2": tlA}, WaveDeadline: 2 * time.Second}
	res, err := r.ctl.Run(context.Background(), plan, Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := store.Get("r-pend")
	if res.Outcome != OutcomePending || rec.State != proto.RolloutPending || rec.Done() {
		t.Fatalf("outcome %s, record %s (done %v): want pending, not done", res.Outcome, rec.State, rec.Done())
	}
	simNode(t, r.b, "n2", proto.StateSucceeded) // wakes up
	res, err = r.ctl.Resume(context.Background(), rec, Options{Store: store, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("resume of a pending rollout: %v", err)
	}
	rec, _ = store.Get("r-pend")
	if res.Outcome != OutcomeSucceeded || rec.State != proto.RolloutSucceeded {
		t.Fatalf("after n2 converged: outcome %s, record %s", res.Outcome, rec.State)
	}
}

// Issue 13.3: a target's recorded end is its end in that rollout. After a
// later rollout moved it on, Progress (rollout show) still reports the
// roll-back it recorded, not "cancelled — superseded".
func TestProgressKeepsARecordedEnd(t *testing.T) {
	r := newRig(t)
	simNode(t, r.b, "n1", proto.StateRolledBack)
	r.fleet.Settle(context.Background(), 200*time.Millisecond, 2*time.Second)
	store := tempStore(t)
	res, err := r.ctl.Run(context.Background(), Plan{ID: "r-first", Targets: map[string]string{"n1": tlA}}, Options{Store: store, Timeout: 10 * time.Second})
	if err != nil || res.Outcome != OutcomeRolledBack {
		t.Fatalf("first rollout: %v %+v", err, res)
	}
	rec, _ := store.Get("r-first")
	if rec.State != proto.RolloutRolledBack {
		t.Fatalf("record state %s, want rolled-back (the outcome)", rec.State)
	}
	// A later rollout: the simulated node reports its new gen succeeded.
	if _, err := r.ctl.Run(context.Background(), Plan{ID: "r-second", Targets: map[string]string{"n1": tlB}}, Options{Store: store, Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool {
		v, _ := r.fleet.Get("n1")
		return v.Status != nil && v.Status.Execution.Rollout == "r-second"
	})
	got := Progress(rec, r.fleet)
	if got.Outcome != OutcomeRolledBack || got.Nodes[0].State != proto.StateRolledBack {
		t.Fatalf("rollout show of the first rollout: outcome %s, n1 %s (%s)", got.Outcome, got.Nodes[0].State, got.Nodes[0].Detail)
	}
}

// Issue 13.1: a signed rollout is not resumed or cancelled without a key
// (what it would publish unsigned, nodes that pin keys reject), and the
// record is left as it was.
func TestSignedRolloutNeedsAKeyToResume(t *testing.T) {
	r := newRig(t)
	key, err := proto.GenerateKey("operator")
	if err != nil {
		t.Fatal(err)
	}
	store := tempStore(t)
	plan := Plan{ID: "r-signed", Targets: map[string]string{"n1": tlA}, WaveDeadline: time.Second}
	if _, err := r.ctl.Run(context.Background(), plan, Options{Store: store, Key: &key}); err != nil {
		t.Fatal(err)
	}
	rec, _ := store.Get("r-signed")
	if rec.KeyID != "operator" || rec.State != proto.RolloutPending {
		t.Fatalf("record key %q state %s", rec.KeyID, rec.State)
	}
	if _, err := r.ctl.Resume(context.Background(), rec, Options{Store: store}); !errors.Is(err, ErrKeyNeeded) {
		t.Errorf("resume without a key: %v, want ErrKeyNeeded", err)
	}
	if err := r.ctl.Cancel(context.Background(), rec, Options{Store: store}); !errors.Is(err, ErrKeyNeeded) {
		t.Errorf("cancel without a key: %v, want ErrKeyNeeded", err)
	}
	if got, _ := store.Get("r-signed"); got.State != proto.RolloutPending {
		t.Errorf("record now %s", got.State)
	}
	if err := r.ctl.Cancel(context.Background(), rec, Options{Store: store, Key: &key}); err != nil {
		t.Fatalf("cancel with the key: %v", err)
	}
	if got, _ := store.Get("r-signed"); got.State != proto.RolloutCancelled {
		t.Errorf("record after cancel %s", got.State)
	}
	// Issue 13.5: n1 never connected; cancel cleared its retained Desired.
	eventually(t, 5*time.Second, func() bool {
		v, _ := r.fleet.Get("n1")
		return v.DesiredLast == 0 && !v.DesiredSeen.IsZero()
	})
}

// tempStore is a fresh record store in the test's temporary directory.
func tempStore(t *testing.T) *BoltStore {
	t.Helper()
	s, err := OpenStore(filepath.Join(t.TempDir(), "rollouts.db"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
