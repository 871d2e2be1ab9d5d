package nixsys

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Errors a caller may test with errors.Is.
var (
	// ErrInvalidAction: the action is not switch, boot, test or dry-activate.
	ErrInvalidAction = errors.New("invalid activation action")
	// ErrActivationRunning: runDir records an activation whose helper
	// is still running; StartActivation refuses to start another.
	ErrActivationRunning = errors.New("an activation is already running")
	// ErrHelperLost: the helper is gone and left no result (killed, or it
	// never started). The switch may or may not have run.
	ErrHelperLost = errors.New("activation helper exited without a result")
	// ErrNeverStarted accompanies ErrHelperLost when the helper never
	// recorded its pid: it writes the pid before it runs the switch, so
	// the switch did not run and starting the activation again is safe
	// (labd was killed between recording the activation and starting it).
	ErrNeverStarted = errors.New("the switch never started")
)

// ActivationError is an activation that cannot run (Phase "check",
// nothing was changed), could not be started or whose outcome could not be
// learned (Phase "start" or "wait"), or that failed (Phase "switch", see
// Result.Err).
type ActivationError struct {
	Phase    string // "check", "start", "wait" or "switch"
	Toplevel string
	Action   string
	Err      error
}

func (e *ActivationError) Error() string {
	return fmt.Sprintf("activation %s %s: %s: %v", e.Action, e.Toplevel, e.Phase, e.Err)
}

func (e *ActivationError) Unwrap() error { return e.Err }

// Result is the outcome of switch-to-configuration.
type Result struct {
	ExitCode   int    // -1: it could not be started (see OutputTail)
	OutputTail string // the last ~2 KiB of activation.log
	Started    time.Time
	Finished   time.Time
	Toplevel   string
	Action     string
}

// OK reports whether switch-to-configuration exited 0.
func (r Result) OK() bool { return r.ExitCode == 0 }

// Err returns nil when r is OK, else an *ActivationError of phase "switch"
// naming the exit code and the output tail.
func (r Result) Err() error {
	if r.OK() {
		return nil
	}
	return &ActivationError{Phase: "switch", Toplevel: r.Toplevel, Action: r.Action,
		Err: fmt.Errorf("switch-to-configuration exited with code %d: %s", r.ExitCode, r.OutputTail)}
}

// Activation is one run of switch-to-configuration, started by
// StartActivation or found again by ResumeActivation.
type Activation struct {
	ID       string    // random id, recorded in activation.json and .result
	Toplevel string    // the system being activated
	Action   string    // switch | boot | test | dry-activate
	RunDir   string    // where its files are
	Started  time.Time // when it was started
	Pid      int       // helper's pid, 0 if unknown (systemd-run)
	Unit     string    // transient systemd unit, "" with setsid

	// exited is closed when the helper, a child of this process, exited;
	// nil when this process did not start it.
	exited  <-chan struct{}
	exitErr error // the helper's exit status, set before exited closes

	wait func(ctx context.Context) (Result, error) // fakes only
}

// NewActivation returns an Activation whose Wait calls wait. It is for
// fakes of System (see nixsystest); real activations come from Nix.
func NewActivation(toplevel, action string, wait func(ctx context.Context) (Result, error)) *Activation {
	return &Activation{Toplevel: toplevel, Action: action, Started: time.Now(), wait: wait}
}

// pollInterval is how often Wait looks for the result file.
const pollInterval = 50 * time.Millisecond

// helperStartGrace is how long a recorded activation may have no known
// helper pid before Wait decides that its helper never started.
const helperStartGrace = 15 * time.Second

// Wait waits until the activation finished and returns its result. A
// failed switch is a Result with a non-zero ExitCode and a nil error; the
// error (an *ActivationError of phase "wait") says the outcome could not be
// learned: ctx ended (its deadline is the activation timeout; the switch
// keeps running, detached) or the helper died without a result
// (ErrHelperLost). Wait may be called again after an error.
func (a *Activation) Wait(ctx context.Context) (Result, error) {
	if a.wait != nil {
		return a.wait(ctx)
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		res, ok, err := readResult(a.RunDir, a.ID)
		if err != nil {
			return Result{}, a.waitErr(err)
		}
		if ok {
			return res, nil
		}
		if lost, why := a.helperGone(); lost {
			// It may have written the result just before exiting.
			if res, ok, err := readResult(a.RunDir, a.ID); ok || err != nil {
				return res, a.waitErr(err)
			}
			if readHelperPid(a.RunDir, a.ID) == 0 {
				return Result{}, a.waitErr(fmt.Errorf("%w (%w): %s", ErrHelperLost, ErrNeverStarted, why))
			}
			return Result{}, a.waitErr(fmt.Errorf("%w: %s", ErrHelperLost, why))
		}
		select {
		case <-ctx.Done():
			return Result{}, a.waitErr(fmt.Errorf("no result yet: %w", ctx.Err()))
		case <-tick.C:
		case <-a.exited:
		}
	}
}

func (a *Activation) waitErr(err error) error {
	if err == nil {
		return nil
	}
	return &ActivationError{Phase: "wait", Toplevel: a.Toplevel, Action: a.Action, Err: err}
}

// helperGone reports whether the helper is known to be gone.
func (a *Activation) helperGone() (bool, string) {
	if a.exited != nil {
		select {
		case <-a.exited:
			return true, fmt.Sprintf("helper pid %d: %v", a.Pid, a.exitErr)
		default:
			return false, ""
		}
	}
	pid := readHelperPid(a.RunDir, a.ID)
	if pid == 0 {
		pid = a.Pid
	}
	if pid == 0 {
		if time.Since(a.Started) > helperStartGrace {
			return true, fmt.Sprintf("no helper pid recorded %s after the start", helperStartGrace)
		}
		return false, ""
	}
	if !processAlive(pid) {
		return true, fmt.Sprintf("helper pid %d is gone", pid)
	}
	return false, ""
}
