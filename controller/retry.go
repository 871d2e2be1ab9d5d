package controller

import (
	"errors"
	"fmt"

	"github.com/lab-fleet/lab/proto"
)

// ErrNothingToRetry refuses a retry of a rollout none of whose targets
// failed.
var ErrNothingToRetry = errors.New("no failed targets to retry")

// Retryable reports whether a target's end in a rollout counts as a
// failure worth retrying: failed, rolled back, timed out, rejected. A
// target that succeeded, was already current, was cancelled or is still
// pending is not retried (a pending one converges by itself).
func Retryable(n NodeResult) bool {
	return !n.Pending && n.State != "" && n.State != proto.StateCancelled && !n.State.OK()
}

// RetryPlan is the plan that retries the failed targets of rec (res is
// its progress, Progress(rec, fleet)), as hawkBit does: the same plan for
// those targets only, groups left out, under the id <id>-retry, or
// <id>-retry-N for the first N from 2 that taken does not report.
func RetryPlan(rec *Record, res *Result, taken func(id string) bool) (Plan, error) {
	plan := rec.Plan
	plan.Targets, plan.Groups = map[string]string{}, nil
	for _, n := range res.Nodes {
		if Retryable(n) {
			plan.Targets[n.Node] = rec.Plan.Targets[n.Node]
		}
	}
	if len(plan.Targets) == 0 {
		return Plan{}, fmt.Errorf("rollout %s: %w (%s)", rec.Plan.ID, ErrNothingToRetry, res.Outcome)
	}
	base := rec.Plan.ID
	if len(base) > 50 {
		base = base[:50] // <id>-retry-NN stays within the 63 characters of an id
	}
	plan.ID = base + "-retry"
	for i := 2; taken(plan.ID); i++ {
		plan.ID = fmt.Sprintf("%s-retry-%d", base, i)
	}
	return plan, nil
}
