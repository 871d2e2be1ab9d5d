package node

import (
	"context"
	"fmt"
	"strings"

	"github.com/lab-fleet/lab/node/hook"
)

// configuredHooks tells the machine which phases have hooks.
func configuredHooks(s hook.Set) map[hook.Phase]bool {
	m := map[hook.Phase]bool{}
	for _, p := range []hook.Phase{hook.PreActivate, hook.PostActivate, hook.PreRollback, hook.PostRollback} {
		m[p] = len(s.Of(p)) > 0
	}
	return m
}

// runHooks runs the pre_activate or post_activate hooks (effHooks), in
// order, stopping at the first that fails. The detail names the failing
// hook with its output's tail, or, when all passed, each with its own.
func (d *Daemon) runHooks(ctx context.Context, e effHooks) evHooked {
	results, ok := hook.Run(ctx, e.phase, d.cfg.Hooks.Of(e.phase), e.env, true)
	d.logHooks(results)
	ev := evHooked{gen: e.env.Gen, phase: e.phase, ok: ok}
	switch {
	case !ok:
		ev.detail = results[len(results)-1].String()
	case len(results) == 0:
		ev.detail = fmt.Sprintf("no %s hooks configured", e.phase)
	default:
		ev.detail = fmt.Sprintf("%s hooks passed: %s", e.phase, joinResults(results))
	}
	return ev
}

// rollbackHooks runs every hook of a rollback phase, failing or not, and
// returns what they said ("" when there are none).
func (d *Daemon) rollbackHooks(ctx context.Context, p hook.Phase, env hook.Env) string {
	results, ok := hook.Run(ctx, p, d.cfg.Hooks.Of(p), env, false)
	d.logHooks(results)
	for i := range results {
		// Beside the reason for the rollback in one detail: shorter tails
		// (labd's log has each hook's whole tail).
		results[i].Output = tail(results[i].Output, 300)
	}
	switch {
	case len(results) == 0:
		return ""
	case !ok:
		return fmt.Sprintf("%s hooks failed (the rollback went on): %s", p, joinResults(results))
	}
	return fmt.Sprintf("%s hooks passed: %s", p, joinResults(results))
}

func joinResults(results []hook.Result) string {
	s := make([]string, len(results))
	for i, r := range results {
		s[i] = r.String()
	}
	return tail(strings.Join(s, "; "), hook.OutputTail+200)
}

func (d *Daemon) logHooks(results []hook.Result) {
	for _, r := range results {
		if r.OK() {
			d.log.Info("hook passed", "phase", r.Phase, "index", r.Index, "command", r.Command, "took", r.Took, "output", r.Output)
		} else {
			d.log.Warn("hook failed", "phase", r.Phase, "index", r.Index, "command", r.Command, "took", r.Took, "err", r.Err, "output", r.Output)
		}
	}
}
