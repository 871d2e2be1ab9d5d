package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
)

// Flags shared by the commands that keep rollout records.
const keyRolloutsDB = "rollouts_db"

// openStore opens the rollout records (--rollouts-db, LAB_ROLLOUTS_DB).
func openStore(g *globals) (*controller.BoltStore, error) {
	return controller.OpenStore(storePath(g))
}

func storePath(g *globals) string {
	if p := g.v.GetString(keyRolloutsDB); p != "" {
		return p
	}
	return controller.DefaultStorePath()
}

// reporter prints a rollout's progress while it runs: lines on stderr for
// people, or JSON lines on stdout for scripts (--json).
type reporter struct {
	g      *globals
	asJSON bool
	bars   *bars // on a terminal
}

// newReporter draws progress bars when stderr is a terminal.
func newReporter(g *globals, asJSON bool) *reporter {
	r := &reporter{g: g, asJSON: asJSON}
	if !asJSON && isTerminal(g.errOut) {
		r.bars = newBars(g.errOut, false)
	}
	return r
}

// stop ends the progress display (idempotent).
func (r *reporter) stop() {
	if r.bars != nil {
		r.bars.stop()
		r.bars = nil
	}
}

// event is one JSON line of `--json` output.
type event struct {
	Type    string                 `json:"type"` // wave, halt, node, result
	Time    time.Time              `json:"time"`
	Wave    int                    `json:"wave,omitempty"`
	Waves   int                    `json:"waves,omitempty"`
	Nodes   []string               `json:"nodes,omitempty"`
	Reason  string                 `json:"reason,omitempty"`
	Node    *controller.NodeResult `json:"node,omitempty"`
	Result  *controller.Result     `json:"result,omitempty"`
	Rollout string                 `json:"rollout,omitempty"`
}

func (r *reporter) emit(e event) {
	e.Time = time.Now().UTC()
	b, err := json.Marshal(e)
	if err == nil {
		fmt.Fprintln(r.g.out, string(b))
	}
}

func (r *reporter) options(o controller.Options) controller.Options {
	stamp := func() string { return time.Now().Format("15:04:05") }
	o.OnWave = func(e controller.WaveEvent) {
		if !r.asJSON {
			e.Reason = sayReason(e.Reason)
		}
		switch {
		case r.bars != nil:
			r.bars.wave(e)
		case r.asJSON && e.Halted:
			r.emit(event{Type: "halt", Reason: e.Reason})
		case r.asJSON:
			r.emit(event{Type: "wave", Wave: e.Index + 1, Waves: e.Total, Nodes: e.Nodes})
		case e.Halted:
			fmt.Fprintf(r.g.errOut, "%s  HALTED: %s\n", stamp(), e.Reason)
		case e.Total > 1:
			fmt.Fprintf(r.g.errOut, "%s  wave %d/%d: %s\n", stamp(), e.Index+1, e.Total, strings.Join(e.Nodes, " "))
		}
	}
	o.Progress = func(n controller.NodeResult) {
		if r.bars != nil {
			r.bars.node(n)
			return
		}
		if r.asJSON {
			r.emit(event{Type: "node", Node: &n})
			return
		}
		state := string(n.State)
		switch {
		case state == "":
			state = "pending (" + n.Detail + ")"
		case n.State == proto.StateQueued && n.Detail != "":
			state += " (" + n.Detail + ")"
		}
		fmt.Fprintf(r.g.errOut, "%s  %-8s %s\n", stamp(), n.Node, state)
	}
	return o
}

// result prints the end of a rollout and maps its outcome to the exit code;
// keyFile is the key it was signed with, for the hint on what to do next.
func (r *reporter) result(res *controller.Result, keyFile string) error {
	r.stop()
	if r.asJSON {
		r.emit(event{Type: "result", Rollout: res.Rollout, Result: res})
	} else if err := render.WriteResult(r.g.out, forPeople(res)); err != nil {
		return err
	}
	if res.Outcome == controller.OutcomePending && !r.asJSON {
		fmt.Fprintf(r.g.errOut, "the rollout is pending: its offline targets converge when they connect; `labctl rollout show %s` shows them, `%s` follows it again (and publishes again what the broker lost), `%s` stops it\n",
			res.Rollout, rolloutCmd("resume", res.Rollout, keyFile), rolloutCmd("cancel", res.Rollout, keyFile))
	}
	if code := render.ExitCode(res.Outcome); code != 0 {
		return exitErr{code: code, err: fmt.Errorf("rollout %s %s", res.Rollout, res.Outcome)}
	}
	return nil
}

// interrupted explains how to pick up a rollout whose follower stopped.
func interrupted(id, keyFile string, err error) error {
	return fmt.Errorf("%w\nthe rollout keeps its state: continue it with `%s`, or stop it with `%s`", err,
		rolloutCmd("resume", id, keyFile), rolloutCmd("cancel", id, keyFile))
}

// rolloutCmd is the command line that resumes or cancels rollout id, with
// the key that signed it: without it, what resume and cancel publish is
// unsigned, and nodes that pin keys reject it.
func rolloutCmd(verb, id, keyFile string) string {
	c := "labctl rollout " + verb + " " + id
	if keyFile != "" {
		c += " --key " + shellQuote(keyFile)
	}
	return c
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func isUsage(err error) bool {
	return errors.Is(err, controller.ErrInvalidPlan) || errors.Is(err, controller.ErrNoWaitNeedsOneWave) ||
		errors.Is(err, controller.ErrRolloutExists) || errors.Is(err, controller.ErrKeyNeeded) || errors.Is(err, controller.ErrRolloutEnded)
}
