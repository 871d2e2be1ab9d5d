package proto

// ExecState is a node's execution state for one (rollout, gen) (DESIGN §6).
type ExecState string

// The execution states. Idle means no execution has been recorded.
const (
	StateIdle           ExecState = "idle"
	StateQueued         ExecState = "queued"
	StateDeferred       ExecState = "deferred"
	StateFetching       ExecState = "fetching"
	StateActivating     ExecState = "activating"
	StateRebooting      ExecState = "rebooting"
	StateVerifying      ExecState = "verifying"
	StateSucceeded      ExecState = "succeeded"
	StateFailed         ExecState = "failed" // failed before the profile moved: nothing to undo
	StateRollingBack    ExecState = "rolling-back"
	StateRolledBack     ExecState = "rolled-back"
	StateRollbackFailed ExecState = "rollback-failed"
	StateRejected       ExecState = "rejected"
	StateTimedOut       ExecState = "timed-out"
	StateCancelled      ExecState = "cancelled"
	StateAlreadyCurrent ExecState = "already-current"
)

var execStates = map[ExecState]struct{ terminal, ok bool }{
	StateIdle: {}, StateQueued: {}, StateDeferred: {}, StateFetching: {}, StateActivating: {},
	StateRebooting: {}, StateVerifying: {}, StateRollingBack: {},
	StateSucceeded:      {terminal: true, ok: true},
	StateAlreadyCurrent: {terminal: true, ok: true},
	StateFailed:         {terminal: true},
	StateRolledBack:     {terminal: true},
	StateRollbackFailed: {terminal: true},
	StateRejected:       {terminal: true},
	StateTimedOut:       {terminal: true},
	StateCancelled:      {terminal: true},
}

// Valid reports whether s is a known state.
func (s ExecState) Valid() bool { _, ok := execStates[s]; return ok }

// Terminal reports whether nothing more happens to this execution.
func (s ExecState) Terminal() bool { return execStates[s].terminal }

// OK reports whether the execution ended with the desired toplevel running.
func (s ExecState) OK() bool { return execStates[s].ok }

// Action is what switch-to-configuration is asked to do.
type Action string

// The actions.
const (
	ActionSwitch Action = "switch"
	ActionBoot   Action = "boot"
	ActionTest   Action = "test"
)

// Valid reports whether a is a known action.
func (a Action) Valid() bool { return a == ActionSwitch || a == ActionBoot || a == ActionTest }

// RebootPolicy says when a node reboots after activation.
type RebootPolicy string

// The reboot policies. The empty policy means RebootNever.
const (
	RebootNever    RebootPolicy = "never"
	RebootIfNeeded RebootPolicy = "if-needed"
	RebootAlways   RebootPolicy = "always"
)

// Valid reports whether p is a known policy ("" counts as never).
func (p RebootPolicy) Valid() bool {
	return p == "" || p == RebootNever || p == RebootIfNeeded || p == RebootAlways
}

// GateState is the state a Gate announces for its rollout.
type GateState string

// The gate states.
const (
	GateRunning   GateState = "running"
	GatePaused    GateState = "paused"
	GateCancelled GateState = "cancelled"
)

// Valid reports whether g is a known gate state.
func (g GateState) Valid() bool { return g == GateRunning || g == GatePaused || g == GateCancelled }

// Op is the operation of a one-shot Command.
type Op string

// The command operations.
const (
	OpReboot   Op = "reboot"
	OpCheck    Op = "check"
	OpCancel   Op = "cancel"
	OpRollback Op = "rollback"
	OpResync   Op = "resync"
)

// Valid reports whether o is a known operation.
func (o Op) Valid() bool {
	switch o {
	case OpReboot, OpCheck, OpCancel, OpRollback, OpResync:
		return true
	}
	return false
}

// CmdOutcome is what a node did with a Command it acknowledges (an Event
// naming the command's id and op).
type CmdOutcome string

// The command outcomes.
const (
	CmdAccepted CmdOutcome = "accepted" // the node acts on it (a reboot: the reboot command runs)
	CmdRefused  CmdOutcome = "refused"  // the node will not act on it (busy, bad signature, expired, not supported); Detail says why
	CmdFailed   CmdOutcome = "failed"   // the node tried and could not (the reboot command failed); Detail says why
)

// Valid reports whether c is a known outcome.
func (c CmdOutcome) Valid() bool { return c == CmdAccepted || c == CmdRefused || c == CmdFailed }

// RolloutPhase is the overall state of a rollout. Its values past
// running are the rollout outcomes labctl reports everywhere (exit codes,
// records, this retained state): one vocabulary. Why a rollout stopped
// early (a failure threshold) is RolloutState.Halted with its Reason, not a
// phase of its own.
type RolloutPhase string

// The rollout phases.
const (
	RolloutRunning    RolloutPhase = "running"     // a controller follows it
	RolloutPending    RolloutPhase = "pending"     // followed to its end, some targets offline or busy: they converge later; resumable
	RolloutSucceeded  RolloutPhase = "succeeded"   // every target runs the new system
	RolloutRolledBack RolloutPhase = "rolled-back" // some targets rolled back, none failed worse
	RolloutFailed     RolloutPhase = "failed"      // some failed, timed out, were rejected or could not roll back
	RolloutCancelled  RolloutPhase = "cancelled"   // cancelled before every target ran
	// RolloutHalted is what versions before 2026-12 published for a
	// rollout stopped by its failure threshold. It is still accepted when
	// decoding (a retained state outlives upgrades) and never published.
	RolloutHalted RolloutPhase = "halted"
)

// Valid reports whether p is a known phase.
func (p RolloutPhase) Valid() bool {
	switch p {
	case RolloutRunning, RolloutPending, RolloutSucceeded, RolloutRolledBack, RolloutFailed, RolloutCancelled, RolloutHalted:
		return true
	}
	return false
}

// Terminal reports whether the rollout is over: nothing of it is still
// to happen. A pending rollout is not over (its offline targets converge
// when they wake, and it may be resumed or cancelled).
func (p RolloutPhase) Terminal() bool { return p != RolloutRunning && p != RolloutPending && p != "" }
