package health

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/lab-fleet/lab/internal/clock"
)

// Result is the outcome of one check.
type Result struct {
	Name     string    `json:"name"`
	OK       bool      `json:"ok"`
	Detail   string    `json:"detail"` // of the last attempt
	Attempts int       `json:"attempts"`
	At       time.Time `json:"at"` // when the last attempt ended
}

// ExecFunc runs argv (no shell) with env added to the environment and
// returns its combined output; a non-zero exit is an error.
type ExecFunc func(ctx context.Context, argv []string, env []string) ([]byte, error)

// Runner runs checks. The zero value uses the wall clock and os/exec.
type Runner struct {
	Clock clock.Clock // default the system clock (internal/clock)
	Exec  ExecFunc    // default ExecCommand
	Env   []string    // added to command checks' environment, e.g. LAB_TOPLEVEL=/nix/store/...
}

// Run runs the checks concurrently and returns their results in the same
// order. Each check waits its Grace, then attempts until one succeeds or
// its retries are exhausted. An invalid check fails without attempts. When
// ctx ends, the checks still running fail with a detail saying so.
func (r *Runner) Run(ctx context.Context, checks []Check) []Result {
	results := make([]Result, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = r.runOne(ctx, c)
		}()
	}
	wg.Wait()
	return results
}

// runOne runs one check: grace, then attempts.
func (r *Runner) runOne(ctx context.Context, c Check) Result {
	clk := clock.Or(r.Clock)
	res := Result{Name: c.Name}
	if err := c.Validate(); err != nil {
		res.Detail, res.At = err.Error(), clk.Now()
		return res
	}
	wait := c.Grace
	for res.Attempts < c.attempts() {
		if wait > 0 {
			after, timer := clock.After(clk, wait)
			select {
			case <-after:
			case <-ctx.Done():
				timer.Stop()
				res.Detail = fmt.Sprintf("cancelled after %d attempts: %v (last: %s)", res.Attempts, ctx.Err(), res.Detail)
				res.At = clk.Now()
				return res
			}
		}
		res.Attempts++
		res.OK, res.Detail = r.attempt(ctx, c)
		res.At = clk.Now()
		if res.OK {
			return res
		}
		wait = c.Interval
	}
	return res
}

// attempt makes one attempt, bounded by the check's Timeout.
func (r *Runner) attempt(ctx context.Context, c Check) (bool, string) {
	actx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	var err error
	var detail string
	switch c.Type {
	case TypeHTTP:
		detail, err = probeHTTP(actx, c)
	case TypeTCP:
		detail, err = probeTCP(actx, c)
	case TypeCommand:
		detail, err = r.probeCommand(actx, c.Command)
	case TypeSystemd:
		detail, err = r.probeSystemd(actx, c.Unit)
	}
	if err == nil {
		return true, detail
	}
	if errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		return false, fmt.Sprintf("timeout after %s: %v", c.Timeout, err)
	}
	return false, err.Error()
}

func (r *Runner) exec(ctx context.Context, argv []string) ([]byte, error) {
	if r.Exec != nil {
		return r.Exec(ctx, argv, r.Env)
	}
	return ExecCommand(ctx, argv, r.Env)
}

// ExecCommand is the default ExecFunc: os/exec, no shell, env added to
// labd's environment, stdin /dev/null. Children that keep its output open
// are not waited for more than a second after it exits or times out.
func ExecCommand(ctx context.Context, argv []string, env []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = time.Second
	return cmd.CombinedOutput()
}
