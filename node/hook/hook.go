// Package hook runs the operator's deploy hooks around an activation:
// argv lists from labd's local configuration (never from the wire), run
// directly (no shell unless the operator writes one), one after another,
// each bounded by its own timeout, with a small fixed environment that
// names the execution. It owns no goroutine: the node's steps
// (node/steps.go) call Run and turn its results into events.
package hook

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Phase is when a hook runs; its name is its configuration key.
type Phase string

// The phases, in the order an execution meets them.
const (
	PreActivate  Phase = "pre_activate"  // after fetching, before the profile moves; failure: the execution failed, nothing was changed
	PostActivate Phase = "post_activate" // after the switch succeeded, before the health checks; failure: a failed health check (rollback)
	PreRollback  Phase = "pre_rollback"  // before the profile goes back; failure is reported, the rollback goes on
	PostRollback Phase = "post_rollback" // after the rollback activation; failure is reported
)

const (
	// DefaultTimeout bounds a hook whose timeout is not set.
	DefaultTimeout = 5 * time.Minute
	// OutputTail is how much of a hook's output (the end of stdout and
	// stderr together) is kept for the event.
	OutputTail = 1500
)

// Hook is one command.
type Hook struct {
	Command []string      `mapstructure:"command" json:"command"`
	Timeout time.Duration `mapstructure:"timeout" json:"timeout,omitempty"`
}

// Set is the hooks of every phase, as in labd's config file (hooks.*).
type Set struct {
	PreActivate  []Hook `mapstructure:"pre_activate"`
	PostActivate []Hook `mapstructure:"post_activate"`
	PreRollback  []Hook `mapstructure:"pre_rollback"`
	PostRollback []Hook `mapstructure:"post_rollback"`
}

// Of returns the hooks of phase p.
func (s Set) Of(p Phase) []Hook {
	switch p {
	case PreActivate:
		return s.PreActivate
	case PostActivate:
		return s.PostActivate
	case PreRollback:
		return s.PreRollback
	case PostRollback:
		return s.PostRollback
	}
	return nil
}

// Validate checks every hook and fills in the default timeout; bad is told
// each problem with its key, e.g. "hooks.pre_activate[0].command", "empty".
func (s *Set) Validate(bad func(key, problem string)) {
	for _, p := range []struct {
		phase Phase
		hooks []Hook
	}{{PreActivate, s.PreActivate}, {PostActivate, s.PostActivate}, {PreRollback, s.PreRollback}, {PostRollback, s.PostRollback}} {
		for i := range p.hooks {
			h := &p.hooks[i]
			key := fmt.Sprintf("hooks.%s[%d]", p.phase, i)
			switch {
			case len(h.Command) == 0 || h.Command[0] == "":
				bad(key+".command", "empty")
			case len(h.Command) == 1 && strings.ContainsAny(h.Command[0], " \t"):
				bad(key+".command", fmt.Sprintf("%q is one argv element with spaces: hooks run without a shell; write a list ([systemctl, stop, foo]) or [sh, -c, \"...\"]", h.Command[0]))
			}
			if h.Timeout < 0 {
				bad(key+".timeout", fmt.Sprintf("negative duration %s", h.Timeout))
			}
			if h.Timeout == 0 {
				h.Timeout = DefaultTimeout
			}
		}
	}
}

// Env is what a hook is told about the execution, in its environment.
type Env struct {
	Rollout  string // LAB_ROLLOUT
	Gen      uint64 // LAB_GEN
	Toplevel string // LAB_TOPLEVEL: the new system
	Previous string // LAB_PREVIOUS: the system recorded before the profile moved ("" before fetching ended)
	Action   string // LAB_ACTION: switch, boot or test
}

// environ is a hook's whole environment: labd's PATH, LAB_HOOK (the
// phase) and Env. Nothing else of labd's environment is passed on.
func (e Env) environ(p Phase) []string {
	return []string{"PATH=" + os.Getenv("PATH"), "LAB_HOOK=" + string(p), "LAB_ROLLOUT=" + e.Rollout,
		fmt.Sprintf("LAB_GEN=%d", e.Gen), "LAB_TOPLEVEL=" + e.Toplevel, "LAB_PREVIOUS=" + e.Previous, "LAB_ACTION=" + e.Action}
}

// Result is the outcome of one hook.
type Result struct {
	Phase    Phase
	Index    int
	Command  []string
	Err      error // nil: it exited 0
	TimedOut bool  // killed at its timeout
	Output   string
	Took     time.Duration
}

// OK reports whether the hook exited 0 in time.
func (r Result) OK() bool { return r.Err == nil }

// String names the hook and says how it ended, with its output's tail:
// `pre_activate[0] [/bin/check --db]: exit status 3: db is locked`.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s[%d] %s: ", r.Phase, r.Index, describe(r.Command))
	if r.Err != nil {
		b.WriteString(r.Err.Error())
	} else {
		b.WriteString("ok")
	}
	if r.Output != "" {
		b.WriteString(": " + r.Output)
	}
	return b.String()
}

// describe is argv for humans, at most 200 bytes, so that the name of the
// hook survives when an event keeps only the end of a detail.
func describe(argv []string) string {
	s := fmt.Sprint(argv)
	if len(s) > 200 {
		s = s[:199] + "…]"
	}
	return s
}

// Run runs the hooks of phase p in order, each with env. With stop set,
// it stops at the first that fails (the rest do not run). It returns the
// results of the hooks that ran and whether every one succeeded.
func Run(ctx context.Context, p Phase, hooks []Hook, env Env, stop bool) ([]Result, bool) {
	var results []Result
	ok := true
	for i, h := range hooks {
		r := runOne(ctx, h, env.environ(p))
		r.Phase, r.Index = p, i
		results = append(results, r)
		if !r.OK() {
			ok = false
			if stop || ctx.Err() != nil {
				break
			}
		}
	}
	return results, ok
}

// runOne runs one hook in its own process group, so that at its timeout
// the whole group is killed (a shell's children too), with stdin from
// /dev/null and the working directory /.
func runOne(ctx context.Context, h Hook, environ []string) Result {
	r := Result{Command: h.Command}
	if len(h.Command) == 0 || h.Command[0] == "" {
		r.Err = errors.New("empty command")
		return r
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(hctx, h.Command[0], h.Command[1:]...)
	cmd.Env, cmd.Dir = environ, "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second // children that keep the output open are not waited for
	out := &tailBuffer{max: OutputTail}
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	err := cmd.Run()
	r.Took, r.Output = time.Since(start), out.String()
	switch {
	case err == nil:
	case errors.Is(hctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		r.TimedOut = true
		r.Err = fmt.Errorf("killed at its timeout of %s", timeout)
	case ctx.Err() != nil:
		r.Err = fmt.Errorf("stopped: %w", ctx.Err())
	default:
		r.Err = err
	}
	return r
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
	cut bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 2*t.max {
		t.b, t.cut = append([]byte(nil), t.b[len(t.b)-t.max:]...), true
	}
	return len(p), nil
}

// String is the kept output, trimmed, "…" first when the start was cut.
func (t *tailBuffer) String() string {
	b := t.b
	cut := t.cut
	if len(b) > t.max {
		b, cut = b[len(b)-t.max:], true
	}
	s := strings.TrimSpace(strings.ToValidUTF8(string(b), ""))
	if cut && s != "" {
		return "…" + s
	}
	return s
}
