package controller

import (
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// A rollout is a state machine like the node's (node/machine.go): next
// takes the rollout's state, the time and one fact, changes the state and
// returns the actions to perform, in order. It reads no clock, no bus and
// no store; the goroutine that owns the rollout (run, rollout.go) gathers
// the facts and performs the actions, and nothing else touches the state.
//
// Unlike the node's, next changes the state in place instead of returning
// a copy: a rollout's state holds a map entry per target, and copying
// 10,000 of them for every status that arrives would cost more than the
// rest of the step.

// fact is something the goroutine driving a rollout learned.
type fact any

// Facts.
type (
	// factStart: the rollout was created (its first record is saved).
	factStart struct{}
	// factResumed: a controller restarted with the rollout's record;
	// pending says the record had been followed to its end with targets
	// still offline, so the open wave gets a whole deadline again.
	factResumed struct{ pending bool }
	// factViews: the fleet's view changed (a status, a presence, a
	// Desired, a gate).
	factViews struct{ views viewer }
	// factTick: the clock moved.
	factTick struct{}
	// factCancelled: someone else cancelled the rollout (its retained
	// state or one of its gates says so).
	factCancelled struct{ by string }
	// factPause and factResume: requests to hold the next wave, or not.
	factPause  struct{ by string }
	factResume struct{ by string }
	// factTimeout: the run's overall limit (Options.Timeout) passed.
	factTimeout struct{}
	// factBrokerBack: after a reconnect, the broker's retained flood is
	// over; lost is when the connection was lost.
	factBrokerBack struct{ lost time.Time }
	// factPublished: the broker acknowledged these Desired states (node
	// → gen).
	factPublished struct{ gens map[string]uint64 }
	// factRolledBack: the way back of a halted rollout ended.
	factRolledBack struct{}
)

// viewer is what next reads of the fleet: a node's latest view, and the
// members of a group. *Fleet is one.
type viewer interface {
	Get(name string) (NodeView, bool)
	Members(group string) []string
}

// action is something next asks the driver to do.
type action any

// Actions. The first that fails ends the run, except where said: the
// record saved last is where a restart resumes from.
type (
	// actPublishDesired: publish each node's Desired, retained (signed
	// with the run's key, or as the operator signed it), and report the
	// gens acknowledged (factPublished).
	actPublishDesired struct{ nodes []string }
	// actPublishGates: every gate of the rollout says wave open is open,
	// or that the rollout is cancelled.
	actPublishGates struct {
		open  int
		state proto.GateState
	}
	// actClearUnstarted: clear the retained Desired of every target that
	// has not started (an offline one then finds nothing when it wakes).
	actClearUnstarted struct{}
	// actReassert: publish again what the broker lost since lost (zero:
	// anything not in the view). Only a resume fails on it.
	actReassert struct {
		lost   time.Time
		resume bool
	}
	// actSave: save the record; actPublishState: publish the retained
	// RolloutState. Once done, a failure is only logged.
	actSave         struct{ done bool }
	actPublishState struct{ done bool }
	// actDirty: progress changed; the driver saves and publishes it soon,
	// at most a few times a second. actFlush: save and publish it now.
	// Failures of either are logged.
	actDirty struct{}
	actFlush struct{}
	// actProgress: a target's state changed (Options.Progress).
	actProgress struct{ r NodeResult }
	// actWave: a wave opened or the rollout halted (Options.OnWave).
	actWave struct{ ev WaveEvent }
	// actLog: say what happened.
	actLog struct {
		level slog.Level
		msg   string
		args  []any
	}
	// actRollback: switch the targets that succeeded back (a rollout of
	// its own, --on-failure rollback); once it ended, the state is no
	// longer rolling back and the run has its result.
	actRollback struct{}
	// actFinish: the rollout ended; its result is the state's.
	actFinish struct{}
)

func logInfo(msg string, args ...any) actLog  { return actLog{slog.LevelInfo, msg, args} }
func logDebug(msg string, args ...any) actLog { return actLog{slog.LevelDebug, msg, args} }

// next is the rollout's transition: it applies f to s at now and returns
// what to do. After any fact it asks decide until nothing more is to be
// done at once.
func next(s *rolloutState, now time.Time, f fact) []action {
	// Recorded even once ended: the state runs ahead of the actions,
	// and the final record is saved after them.
	switch f := f.(type) {
	case factPublished:
		maps.Copy(s.gens, f.gens)
		return nil
	case factRolledBack:
		s.rollingBack = false
		return nil
	}
	if s.ended {
		return nil
	}
	var out []action
	switch f := f.(type) {
	case factStart:
		if !s.plan.due(now) {
			out = append(out, logInfo("rollout scheduled: nothing is published before its time", "not_before", s.plan.NotBefore,
				"window", s.plan.Window.String(), "first", s.plan.Window.Next(later(now, s.plan.NotBefore)).Format(time.RFC3339)),
				actPublishState{})
		}
	case factResumed:
		return s.resume(now, f.pending)
	case factViews:
		out = s.adopt(f.views, out)
		if s.update(f.views, func(r NodeResult) { out = append(out, actProgress{r}) }) {
			out = append(out, actDirty{})
		}
	case factTick:
	case factCancelled:
		if !s.halted && s.cancelledBy == "" {
			s.cancelledBy = f.by
		}
	case factPause:
		s.paused = f.by
		out = append(out, logInfo("rollout paused", "by", f.by), actFlush{})
	case factResume:
		s.paused = ""
		out = append(out, logInfo("rollout unpaused", "by", f.by), actFlush{})
	case factTimeout:
		return s.finish(out)
	case factBrokerBack:
		out = append(out, actReassert{lost: f.lost})
	default:
		panic(fmt.Sprintf("controller: unknown rollout fact %T", f))
	}
	return s.decideAll(now, out)
}

// situation gathers decide's inputs from s at now.
func (s *rolloutState) situation(now time.Time) situation {
	return situation{Begun: s.begun, Due: s.plan.due(now), WindowOpen: s.plan.Window.Contains(now), Halted: s.halted,
		CancelledBy: s.cancelledBy, Exceeded: s.exceeded(), Rollback: s.plan.OnFailure == OnFailureRollback,
		Opened: s.opened, Waves: len(s.waves), WaveDone: s.waveDone(now), Paused: s.paused != ""}
}

// decideAll performs decide's steps on s until it says wait.
func (s *rolloutState) decideAll(now time.Time, out []action) []action {
	for {
		switch decide(s.situation(now)) {
		case stepFinish:
			return s.finish(out)
		case stepPublishFirst:
			s.begun = true
			first := s.nodesWhere(func(n string) bool { return len(s.waves) == 1 || s.gated[n] })
			if len(first) > 0 {
				out = append(out, actPublishDesired{first})
			}
			out = append(out, logDebug("rollout published", "targets", len(s.plan.Targets), "waves", len(s.waves), "gates", s.gates))
			out = s.openWave(0, now, out)
		case stepCancelled:
			s.cancelled = true
			s.halt(cancelledBy + s.cancelledBy)
			out = append(out, logDebug("rollout cancelled", "by", s.cancelledBy), s.haltEvent(), actDirty{})
		case stepHalt:
			out = s.haltFor(s.failureReason(), out)
		case stepOpenWave:
			s.outside = false
			out = s.openWave(s.opened, now, out)
		case stepHoldWindow:
			if !s.outside {
				s.outside = true
				out = append(out, logInfo("outside the maintenance window: the next wave waits for it", "window", s.plan.Window.String(),
					"opens", s.plan.Window.Next(now).Format(time.RFC3339)))
			}
			return out
		default: // stepWait, stepHoldPaused: the next fact
			return out
		}
	}
}

// nodesWhere lists the targets that include selects, wave by wave.
func (s *rolloutState) nodesWhere(include func(string) bool) []string {
	var out []string
	for _, wave := range s.waves {
		for _, n := range wave {
			if include(n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// openWave opens wave i: the gates of the gated groups move to i+1, and
// the ungated targets of the wave get their Desired.
func (s *rolloutState) openWave(i int, now time.Time, out []action) []action {
	out = append(out, actPublishGates{open: i + 1, state: proto.GateRunning})
	if len(s.waves) > 1 {
		if ungated := s.nodesWhere(func(n string) bool { return !s.gated[n] && s.wave[n] == i }); len(ungated) > 0 {
			out = append(out, actPublishDesired{ungated})
		}
	}
	s.open(i, now)
	return append(out, logDebug("wave opened", "wave", i+1, "of", len(s.waves), "nodes", s.waves[i]),
		actWave{WaveEvent{Index: i, Total: len(s.waves), Nodes: s.waves[i]}}, actSave{}, actPublishState{})
}

// haltFor halts the rollout for reason: no further wave opens, its gates
// say cancelled (gated targets of later waves report cancelled instead of
// waiting forever) and the targets that never started lose their
// Desired. Targets already running finish (or roll back).
func (s *rolloutState) haltFor(reason string, out []action) []action {
	s.halt(reason)
	return append(out, logDebug("rollout halted", "reason", reason), s.haltEvent(),
		actPublishGates{open: s.opened, state: proto.GateCancelled}, actClearUnstarted{}, actDirty{})
}

func (s *rolloutState) haltEvent() actWave {
	return actWave{WaveEvent{Index: s.opened - 1, Total: len(s.waves), Halted: true, Reason: s.reason}}
}

// finish ends the rollout: its final record and state, then the way back
// of the targets that switched when it halted and rolls back on failure.
func (s *rolloutState) finish(out []action) []action {
	s.ended = true
	if s.halted && s.plan.OnFailure == OnFailureRollback && !s.cancelled {
		// Saved done first (a restart does not resume it: the way back is
		// a rollout of its own), marked rolling back until the way back
		// ended, then saved again with its result.
		s.rollingBack = true
		return append(out, actSave{done: true}, actPublishState{done: true}, actRollback{}, actSave{done: true}, actFinish{})
	}
	return append(out, actSave{done: true}, actPublishState{done: true}, actFinish{})
}

// adopt makes a node that joined a group the rollout targets (--on
// @group with one system for all) a target of the current wave.
func (s *rolloutState) adopt(v viewer, out []action) []action {
	if s.opened == 0 || s.halted || s.signed != nil {
		// A submitted rollout has only the Desired states the operator
		// signed: the controller cannot sign one for a newcomer.
		return out
	}
	for group, toplevel := range s.plan.Groups {
		for _, n := range v.Members(group) {
			if _, ok := s.plan.Targets[n]; ok {
				continue
			}
			s.adoptTarget(n, toplevel)
			out = append(out, actPublishDesired{[]string{n}},
				logInfo("node joined a targeted group: added to the current wave", "node", n, "group", group), actSave{})
		}
	}
	return out
}

// resume continues the rollout from its record after a controller's
// restart. What was published before may be gone from the broker
// (restarted on an empty or older store meanwhile): anything published
// and not in the view goes again, and what a run stopped between saving
// its record and publishing did not publish goes now (a gen is recorded
// only once published). The gates of the waves opened so far are
// published again.
func (s *rolloutState) resume(now time.Time, pending bool) []action {
	if s.opened == 0 && !s.plan.due(now) {
		// The follow publishes it when it is due.
		return []action{logInfo("rollout resumed: still scheduled", "not_before", s.plan.NotBefore, "window", s.plan.Window.String())}
	}
	s.begun = true
	out := []action{actReassert{resume: true}}
	missing := s.nodesWhere(func(n string) bool {
		due := len(s.waves) == 1 || s.gated[n] || s.wave[n] < s.opened
		return due && s.gens[n] == 0
	})
	if len(missing) > 0 {
		out = append(out, actPublishDesired{missing})
	}
	if s.opened == 0 {
		return s.openWave(0, now, out)
	}
	if pending {
		s.openedAt = now
	}
	return append(out, actPublishGates{open: s.opened, state: proto.GateRunning},
		logInfo("rollout resumed", "wave", s.opened, "of", len(s.waves)))
}
