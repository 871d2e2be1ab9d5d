package controller

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/lab-fleet/lab/proto"
)

func TestRetryPlan(t *testing.T) {
	states := map[string]proto.ExecState{
		"ok": proto.StateSucceeded, "same": proto.StateAlreadyCurrent, "failed": proto.StateFailed,
		"back": proto.StateRolledBack, "slow": proto.StateTimedOut, "refused": proto.StateRejected,
		"skipped": proto.StateCancelled, "asleep": "",
	}
	rec := &Record{Plan: Plan{ID: "r-1", Targets: map[string]string{}, Groups: map[string]string{"web": tlA},
		Strategy: rolling1, MaxFailures: Size{N: 2}}}
	res := &Result{Outcome: OutcomeFailed}
	for n, st := range states {
		rec.Plan.Targets[n] = tlA
		res.Nodes = append(res.Nodes, NodeResult{Node: n, State: st, Pending: st == ""})
	}
	taken := map[string]bool{}
	plan, err := RetryPlan(rec, res, func(id string) bool { return taken[id] })
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(plan.Targets)); !slices.Equal(got, []string{"back", "failed", "refused", "slow"}) {
		t.Errorf("retried %v, want the failed, rolled back, timed out and rejected only", got)
	}
	if plan.ID != "r-1-retry" || plan.Groups != nil || plan.Strategy != rolling1 || plan.MaxFailures != (Size{N: 2}) {
		t.Errorf("plan %+v: want r-1-retry, no groups, the rest as before", plan)
	}
	if rec.Plan.Targets["ok"] == "" {
		t.Error("the record's plan was changed")
	}
	taken["r-1-retry"], taken["r-1-retry-2"] = true, true
	if plan, _ := RetryPlan(rec, res, func(id string) bool { return taken[id] }); plan.ID != "r-1-retry-3" {
		t.Errorf("id %q with -retry and -retry-2 taken, want r-1-retry-3", plan.ID)
	}
	long := &Record{Plan: Plan{ID: strings.Repeat("a", 63), Targets: map[string]string{"failed": tlA}}}
	plan, err = RetryPlan(long, &Result{Nodes: []NodeResult{{Node: "failed", State: proto.StateFailed}}}, func(string) bool { return false })
	if err != nil || len(plan.ID) > 63 || plan.Validate() != nil {
		t.Errorf("long id: %q, %v, %v", plan.ID, err, plan.Validate())
	}
	_, err = RetryPlan(rec, &Result{Outcome: OutcomeSucceeded, Nodes: []NodeResult{{Node: "ok", State: proto.StateSucceeded}}}, func(string) bool { return false })
	if !errors.Is(err, ErrNothingToRetry) || !strings.Contains(err.Error(), "r-1") {
		t.Errorf("nothing failed: %v", err)
	}
}
