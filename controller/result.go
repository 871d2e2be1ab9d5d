package controller

import "github.com/lab-fleet/lab/proto"

// Outcome classifies a finished rollout for the operator and for scripts.
type Outcome string

// The outcomes, from best to worst (render.ExitCode maps each to labctl's exit code).
const (
	OutcomeSucceeded  Outcome = "succeeded"   // every target runs the new system
	OutcomePending    Outcome = "pending"     // the rest are offline or still busy; they converge later
	OutcomeRolledBack Outcome = "rolled-back" // some targets rolled back, none failed worse
	OutcomeFailed     Outcome = "failed"      // some failed, timed out, were rejected or could not roll back
	OutcomeCancelled  Outcome = "cancelled"   // cancelled before every target ran; none failed
)

// NodeResult is one target's end state in a rollout.
type NodeResult struct {
	Node     string          `json:"node"`
	Wave     int             `json:"wave"` // 1-based
	Gen      uint64          `json:"gen"`
	Toplevel string          `json:"toplevel"`
	State    proto.ExecState `json:"state"`
	Pending  bool            `json:"pending"` // not terminal when the rollout ended
	Online   bool            `json:"online"`
	Detail   string          `json:"detail,omitempty"`
}

// Result is a rollout's end.
type Result struct {
	Rollout  string         `json:"rollout"`
	Outcome  Outcome        `json:"outcome"`
	Counters proto.Counters `json:"counters"`
	Nodes    []NodeResult   `json:"nodes"`
	Waves    [][]string     `json:"waves"`
	Halted   bool           `json:"halted,omitempty"`
	Reason   string         `json:"reason,omitempty"`   // why it halted
	Rollback *Result        `json:"rollback,omitempty"` // the rollout that switched the succeeded targets back (--on-failure rollback)
}

// count tallies node results.
func count(nodes []NodeResult) proto.Counters {
	c := proto.Counters{Total: len(nodes)}
	for _, n := range nodes {
		switch {
		case n.State == proto.StateCancelled:
			c.Cancelled++
		case n.Pending && n.State == "":
			c.Pending++
		case n.Pending:
			c.Running++
		case n.State.OK():
			c.Succeeded++
		case n.State == proto.StateRolledBack:
			c.RolledBack++
		default:
			c.Failed++
		}
	}
	return c
}

// classify is the outcome of a set of node results: the worst one wins.
func classify(c proto.Counters) Outcome {
	switch {
	case c.Failed > 0:
		return OutcomeFailed
	case c.RolledBack > 0:
		return OutcomeRolledBack
	case c.Cancelled > 0:
		return OutcomeCancelled
	case c.Pending > 0 || c.Running > 0:
		return OutcomePending
	}
	return OutcomeSucceeded
}

// phase is the rollout phase for counters: running until done, then the
// outcome itself (one vocabulary for exit codes, records and the retained
// RolloutState).
func phase(c proto.Counters, done bool) proto.RolloutPhase {
	if !done {
		return proto.RolloutRunning
	}
	return classify(c).Phase()
}

// Phase is the rollout phase that records and RolloutState use for o.
func (o Outcome) Phase() proto.RolloutPhase { return proto.RolloutPhase(o) }
