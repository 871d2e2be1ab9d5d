package node

import (
	"github.com/lab-fleet/lab/node/hook"
	"github.com/lab-fleet/lab/proto"
)

// The transitions of the deploy hooks, part of next (machine.go): pure.

// verify follows the move to verifying (eff): the post_activate hooks
// first, if any, then the checks, under the confirm deadline.
func (m machine) verify(s state, eff []effect) (state, []effect) {
	timer := effTimer{s.Exec.Gen, proto.StateVerifying, m.timeouts.of(s.Desired, proto.StateVerifying)}
	if m.hooks[hook.PostActivate] {
		s.Hooks = hook.PostActivate
		return s, append(eff, effHooks{hook.PostActivate, hookEnv(s)}, timer)
	}
	return s, append(eff, effChecks{gen: s.Exec.Gen, names: s.Desired.Checks, toplevel: s.Exec.Toplevel}, timer)
}

// onHooked continues after the pre_activate hooks (the profile moves, or
// the execution failed and nothing was changed) or the post_activate
// hooks (the checks run, or the machine rolls back: a failing hook
// counts as a failed health check). The hooks' results go in the event.
func (m machine) onHooked(s state, e evHooked) (state, []effect) {
	if e.gen != s.Exec.Gen || e.phase == "" || s.Hooks != e.phase {
		return s, nil // stale: the execution moved on (a deadline)
	}
	s.Hooks = ""
	cur := s.Exec.State
	switch {
	case e.phase == hook.PreActivate && !e.ok:
		return m.to(s, proto.StateFailed, "pre_activate hook failed, so nothing was changed: "+e.detail)
	case e.phase == hook.PreActivate:
		return s, []effect{effPersist{}, effEvent{cur, cur, e.detail}, activate(s, false)}
	case !e.ok:
		return m.rollback(s, "post_activate hook failed (counted as a failed health check): "+e.detail)
	default:
		return s, []effect{effPersist{}, effEvent{cur, cur, e.detail}, effChecks{gen: s.Exec.Gen, names: s.Desired.Checks, toplevel: s.Exec.Toplevel}}
	}
}

// activate is the effect that moves the profile and starts the switch.
func activate(s state, resume bool) effActivate {
	return effActivate{gen: s.Exec.Gen, toplevel: s.Exec.Toplevel, action: s.Exec.Action, resume: resume, previous: s.Previous}
}

// hookEnv is what the hooks of s's execution are told.
func hookEnv(s state) hook.Env {
	return hook.Env{Rollout: s.Exec.Rollout, Gen: s.Exec.Gen, Toplevel: s.Exec.Toplevel, Previous: s.Previous, Action: string(s.Exec.Action)}
}
