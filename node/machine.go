package node

import (
	"fmt"
	"slices"
	"time"

	"github.com/lab-fleet/lab/internal/clock"
	"github.com/lab-fleet/lab/node/hook"
	"github.com/lab-fleet/lab/proto"
)

// state is what the daemon persists (state.json) and what next transforms.
type state struct {
	Exec       proto.Execution `json:"exec"`
	Desired    *proto.Desired  `json:"desired,omitempty"`  // the Desired being executed
	Held       *proto.Desired  `json:"held,omitempty"`     // a newer Desired waiting for the current one
	Previous   string          `json:"previous,omitempty"` // recorded before the profile moved
	AppliedGen uint64          `json:"applied_gen"`
	HighGen    uint64          `json:"high_gen"`        // highest gen accepted: older ones are replays
	Gates      map[string]gate `json:"gates,omitempty"` // by group
	// LastBoot is the boot id labd last started under: a different one
	// at start means the machine rebooted.
	LastBoot string `json:"last_boot,omitempty"`
	// BootBefore is the boot id when an execution asked for a reboot;
	// Rebooted records that the machine came back from it.
	BootBefore string `json:"boot_before,omitempty"`
	Rebooted   bool   `json:"rebooted,omitempty"`
	// TimedOut records that the execution's rollback was caused by a deadline.
	TimedOut bool `json:"timed_out,omitempty"`
	// Confirmed records that the broker acknowledged a publish from the
	// new system while verifying (the network survived the activation).
	Confirmed bool `json:"confirmed,omitempty"`
	// Commands are the ids of the last commands acted on (replays are ignored).
	Commands []string `json:"commands,omitempty"`
	// Hooks is the phase whose deploy hooks the execution is running:
	// pre_activate while activating, before the profile moves (restarted,
	// labd runs them again from the first, the profile untouched);
	// post_activate while verifying, before the checks (restarted, they
	// have not passed: labd runs them again). "" otherwise.
	Hooks hook.Phase `json:"hooks,omitempty"`
	// Needs are the secrets the fetched system declares
	// (secrets_needed.go); WaitSecret is the one the execution waits for,
	// still fetching, before it activates ("" when it does not wait).
	Needs      []need `json:"needs,omitempty"`
	WaitSecret string `json:"wait_secret,omitempty"`
	// Present are the secrets in place now (by name), as the secret
	// keeper last said (evSecrets); not persisted: it says so again at
	// every start.
	Present map[string]held `json:"-"`
}

type gate struct {
	Rollout  string          `json:"rollout"`
	OpenWave int             `json:"open_wave"`
	State    proto.GateState `json:"state"`
	Seq      uint64          `json:"seq"` // the gate's high-water mark: older ones are replays
}

// Events: what happened. Each carries the gen it is about where a stale
// completion must be told apart.
type (
	evDesired struct {
		d       *proto.Desired
		current string // toplevel the profile points at now
	}
	evGate struct {
		group string
		g     gate
	}
	evFetched struct {
		gen     uint64
		err     error
		current string
		needs   []need // the secrets the fetched system declares
		declErr error  // its declaration cannot be read or is malformed
	}
	evActivated struct {
		gen          uint64
		profileMoved bool
		ok           bool
		detail       string
	}
	evChecked struct {
		gen    uint64
		ok     bool
		detail string
	}
	evRolledBack struct {
		gen   uint64
		err   error
		hooks string // what the rollback hooks said, "" when none ran
	}
	// evHooked: the deploy hooks of a phase ran; ok when every one
	// passed. detail names them, with their output's tail.
	evHooked struct {
		gen    uint64
		phase  hook.Phase
		ok     bool
		detail string
	}
	evTimeout struct {
		gen   uint64
		phase proto.ExecState
	}
	// evConfirmed: the broker acknowledged a publish from the new system.
	evConfirmed struct{ gen uint64 }
	evCancel    struct{ rollout string }
	evResume    struct{}
	// evRebootCmd is an operator's reboot command (labctl reboot).
	evRebootCmd struct{ id, rollout string }
	// evRebootFailed: the reboot command an execution ran failed.
	evRebootFailed struct {
		gen    uint64
		detail string
	}
	// evPersistFailed: the state of a new execution could not be saved.
	evPersistFailed struct {
		gen uint64
		err error
	}
)

// Effects: what the loop must do, in order, after persisting.
type (
	effPersist struct{}
	effStatus  struct{}
	effEvent   struct {
		from, to proto.ExecState
		detail   string
	}
	effFetch struct {
		gen      uint64
		toplevel string
	}
	effActivate struct {
		gen      uint64
		toplevel string
		action   proto.Action
		resume   bool
		previous string // the recorded previous system: the profile goes back to it if the switch cannot start
	}
	effChecks struct {
		gen      uint64
		names    []string
		toplevel string
	}
	effRollback struct {
		gen      uint64
		previous string
		action   proto.Action
		env      hook.Env // for the pre_rollback and post_rollback hooks
	}
	// effHooks runs the deploy hooks of phase (pre_activate or
	// post_activate), answered by evHooked.
	effHooks struct {
		phase hook.Phase
		env   hook.Env
	}
	effTimer struct {
		gen   uint64
		phase proto.ExecState
		d     time.Duration
	}
	effReject struct {
		rollout string
		gen     uint64
		reason  string
	}
	// effAck acknowledges a command with an event naming it.
	effAck struct {
		ack      cmdAck
		from, to proto.ExecState
		detail   string
	}
	// effReboot runs the configured reboot command. cmd is the
	// operator's command being acted on (id "" for none), acknowledged as
	// failed if the reboot command fails; gen is the execution that
	// waits for the reboot (0: none), told with evRebootFailed.
	effReboot struct {
		why string
		cmd cmdAck
		gen uint64
	}
	// effBootChecks runs every check once after a reboot and reports them.
	effBootChecks struct{}
)

type effect any

// cmdAck names a command (its id, op and rollout) and what the node did
// with it.
type cmdAck struct {
	id, rollout string
	op          proto.Op
	outcome     proto.CmdOutcome
}

// timeouts are the node's defaults, overridden per Desired.
type timeouts struct{ fetch, activate, confirm time.Duration }

func (t timeouts) of(d *proto.Desired, phase proto.ExecState) time.Duration {
	pick := func(sec uint32, def time.Duration) time.Duration {
		if sec > 0 {
			return time.Duration(sec) * time.Second
		}
		return def
	}
	switch phase {
	case proto.StateFetching:
		return pick(d.Timeouts.Fetch, t.fetch)
	case proto.StateActivating:
		return pick(d.Timeouts.Activate, t.activate)
	default:
		return pick(d.Timeouts.Confirm, t.confirm)
	}
}

// machine holds what next needs besides the state: the node's own facts.
type machine struct {
	groups   []string
	hooks    map[hook.Phase]bool // the phases that have deploy hooks configured
	timeouts timeouts
	clock    clock.Clock // the one clock (internal/clock): Real in labd, Fake in tests
	bootID   string      // the boot id of this run of labd (fixed for a process)
}

// busy reports whether an execution is past the point where it can be
// superseded (the profile may have moved).
func busy(s proto.ExecState) bool {
	return s == proto.StateActivating || s == proto.StateVerifying || s == proto.StateRollingBack || s == proto.StateRebooting
}

// next is the transition function: pure, no I/O.
func (m machine) next(s state, ev any) (state, []effect) {
	switch e := ev.(type) {
	case evDesired:
		return m.onDesired(s, e)
	case evGate:
		if s.Gates == nil {
			s.Gates = map[string]gate{}
		}
		if last, ok := s.Gates[e.group]; ok && e.g.Seq != 0 {
			switch {
			case e.g.Seq == last.Seq:
				return s, nil // the retained gate again
			case e.g.Seq < last.Seq:
				return s, []effect{effReject{e.g.Rollout, 0, fmt.Sprintf("gate of %s: replayed or stale: seq %d is not newer than %d", e.group, e.g.Seq, last.Seq)}}
			}
		}
		s.Gates[e.group] = e.g
		if e.g.State == proto.GateCancelled && e.g.Rollout == s.Exec.Rollout && !busy(s.Exec.State) && !s.Exec.State.Terminal() && s.Exec.State != proto.StateIdle {
			return m.to(s, proto.StateCancelled, "cancelled by the rollout's gate")
		}
		if s.Exec.State == proto.StateQueued && m.open(s, s.Desired) {
			return m.fetch(s)
		}
		return s, []effect{effPersist{}}
	case evFetched:
		if s.Exec.State != proto.StateFetching || e.gen != s.Exec.Gen {
			return s, nil
		}
		if e.err != nil {
			return m.to(s, proto.StateFailed, "fetch: "+e.err.Error())
		}
		if e.declErr != nil {
			return m.to(s, proto.StateFailed, "the new system's secret declaration is malformed, so nothing was changed: "+e.declErr.Error())
		}
		s.Previous = e.current
		s.Needs, s.WaitSecret = e.needs, ""
		return m.fetched(s)
	case evSecrets:
		return m.onSecrets(s, e)
	case evHooked:
		return m.onHooked(s, e)
	case evActivated:
		if s.Exec.State != proto.StateActivating || e.gen != s.Exec.Gen || s.Hooks != "" {
			return s, nil
		}
		if !e.profileMoved {
			return m.to(s, proto.StateFailed, "activate: "+e.detail)
		}
		if !e.ok {
			return m.rollback(s, "activation failed: "+e.detail)
		}
		if s.Exec.Action == proto.ActionBoot {
			return m.rebootInto(s)
		}
		s, eff := m.to(s, proto.StateVerifying, "")
		return m.verify(s, eff)
	case evChecked:
		if s.Exec.State != proto.StateVerifying || e.gen != s.Exec.Gen || s.Hooks != "" {
			return s, nil
		}
		if !e.ok {
			return m.rollback(s, "health check failed: "+e.detail)
		}
		s.AppliedGen = s.Exec.Gen
		return m.to(s, proto.StateSucceeded, e.detail)
	case evConfirmed:
		if s.Exec.State != proto.StateVerifying || e.gen != s.Exec.Gen {
			return s, nil
		}
		s.Confirmed = true
		return s, nil
	case evRolledBack:
		if s.Exec.State != proto.StateRollingBack || e.gen != s.Exec.Gen {
			return s, nil
		}
		hooks := ""
		if e.hooks != "" {
			hooks = "; " + e.hooks // reported; they never stop the rollback
		}
		if e.err != nil {
			return m.to(s, proto.StateRollbackFailed, s.Exec.Error+"; rollback failed: "+e.err.Error()+hooks)
		}
		rebooted := s.Rebooted && s.Exec.Action == proto.ActionBoot
		final, detail := proto.StateRolledBack, s.Exec.Error
		if s.TimedOut {
			// A deadline passed: back on the previous system, and counted
			// as a failure, not as a clean rollback.
			final, detail = proto.StateTimedOut, detail+"; rolled back to the previous system"
		}
		detail += hooks
		s, eff := m.to(s, final, detail)
		if rebooted {
			// The machine runs the bad system: the previous boot entry is
			// back, reboot once more into it.
			eff = append(eff, effReboot{why: "boot the previous system again"})
		}
		return s, eff
	case evTimeout:
		if s.Exec.State != e.phase || e.gen != s.Exec.Gen {
			return s, nil
		}
		if e.phase == proto.StateFetching && s.WaitSecret != "" {
			why := fmt.Sprintf("secret %s never arrived within the fetch timeout, so nothing was changed", s.WaitSecret)
			if s.Exec.Error != "waiting for secret "+s.WaitSecret {
				why += " (" + s.Exec.Error + ")"
			}
			return m.to(s, proto.StateTimedOut, why)
		}
		if e.phase == proto.StateFetching {
			return m.to(s, proto.StateTimedOut, "fetch timed out")
		}
		if s.Hooks == hook.PreActivate {
			return m.to(s, proto.StateTimedOut, "activating timed out while the pre_activate hooks ran, so nothing was changed")
		}
		s.TimedOut = true
		if s.Hooks == hook.PostActivate {
			return m.rollback(s, "verifying timed out while the post_activate hooks ran")
		}
		if e.phase == proto.StateRebooting {
			return m.rollback(s, "the machine did not reboot in time")
		}
		if e.phase == proto.StateVerifying && !s.Confirmed {
			return m.rollback(s, "verifying timed out: the broker was not reachable from the new system within the confirm deadline (did the new configuration break the network?)")
		}
		return m.rollback(s, fmt.Sprintf("%s timed out", e.phase))
	case evCancel:
		if s.Exec.State.Terminal() || s.Exec.State == proto.StateIdle || busy(s.Exec.State) || (e.rollout != "" && e.rollout != s.Exec.Rollout) {
			return s, nil
		}
		return m.to(s, proto.StateCancelled, "cancelled")
	case evResume:
		s, eff := m.booted(s)
		s, more := m.resume(s)
		return s, append(eff, more...)
	case evPersistFailed:
		// Nothing has moved yet: do not start what could not be recorded.
		if e.gen != s.Exec.Gen || (s.Exec.State != proto.StateFetching && s.Exec.State != proto.StateQueued) {
			return s, nil
		}
		return m.to(s, proto.StateFailed, "cannot save the node's state, so nothing was changed: "+e.err.Error())
	case evRebootFailed:
		if s.Exec.State != proto.StateRebooting || e.gen != s.Exec.Gen {
			return s, nil
		}
		// The machine is still on the old system; the new one is only
		// its boot default: put the old one back.
		return m.rollback(s, "the machine did not reboot: "+e.detail)
	case evRebootCmd:
		if slices.Contains(s.Commands, e.id) {
			return s, nil // the same command again (QoS 1 redelivery)
		}
		s.Commands = append(s.Commands, e.id)
		if len(s.Commands) > 32 {
			s.Commands = s.Commands[len(s.Commands)-32:]
		}
		cur := s.Exec.State
		if !cur.Valid() {
			cur = proto.StateIdle
		}
		cmd := cmdAck{id: e.id, rollout: e.rollout, op: proto.OpReboot}
		if busy(s.Exec.State) || s.Exec.State == proto.StateFetching {
			cmd.outcome = proto.CmdRefused
			return s, []effect{effPersist{}, effAck{cmd, cur, proto.StateRejected, fmt.Sprintf("reboot refused: the node is %s", s.Exec.State)}}
		}
		accepted := cmd
		accepted.outcome = proto.CmdAccepted
		return s, []effect{effPersist{}, effAck{accepted, cur, proto.StateRebooting, "reboot requested by the operator"},
			effReboot{why: "operator command", cmd: cmd}}
	}
	return s, nil
}

// activating moves a fetched execution, whose secrets are all present,
// to activating: the pre_activate hooks first, if any, then the switch.
func (m machine) activating(s state) (state, []effect) {
	s.Exec.Attempt++
	s.Exec.Error = ""
	s, eff := m.to(s, proto.StateActivating, "")
	timer := effTimer{s.Exec.Gen, proto.StateActivating, m.timeouts.of(s.Desired, proto.StateActivating)}
	if m.hooks[hook.PreActivate] {
		s.Hooks = hook.PreActivate
		return s, append(eff, effHooks{hook.PreActivate, hookEnv(s)}, timer)
	}
	return s, append(eff, activate(s, false), timer)
}

// rebootInto follows a boot activation: the new system is the boot
// default; the machine reboots and confirms it after coming back.
func (m machine) rebootInto(s state) (state, []effect) {
	if s.Desired.Reboot == "" || s.Desired.Reboot == proto.RebootNever {
		s.AppliedGen = s.Exec.Gen
		return m.to(s, proto.StateSucceeded, "the new system is the boot default; it runs after the next reboot")
	}
	s.BootBefore, s.Rebooted = m.bootID, false
	s, eff := m.to(s, proto.StateRebooting, "")
	return s, append(eff, effReboot{why: "boot the new system", gen: s.Exec.Gen},
		effTimer{s.Exec.Gen, proto.StateRebooting, m.timeouts.of(s.Desired, proto.StateActivating)})
}

func (m machine) onDesired(s state, e evDesired) (state, []effect) {
	d := e.d
	switch {
	case d.Gen == s.HighGen || d.Gen == s.AppliedGen || (s.Held != nil && d.Gen == s.Held.Gen):
		return s, nil // the same Desired again (retained, re-delivered): nothing to do
	case d.Gen < s.HighGen:
		return s, []effect{effReject{d.Rollout, d.Gen, fmt.Sprintf("replayed or stale: gen %d is not newer than %d", d.Gen, s.HighGen)}}
	case busy(s.Exec.State):
		s.Held = d
		return s, []effect{effPersist{}}
	}
	s.HighGen, s.Desired, s.Held = d.Gen, d, nil
	s.TimedOut, s.Confirmed, s.Rebooted, s.BootBefore, s.Hooks = false, false, false, "", ""
	s.Needs, s.WaitSecret = nil, ""
	s.Exec = proto.Execution{Rollout: d.Rollout, Gen: d.Gen, Toplevel: d.Toplevel, Action: d.Action, State: proto.StateQueued, Since: m.clock.Now().UnixMilli()}
	if d.Toplevel == e.current && d.Action != proto.ActionBoot {
		s.AppliedGen = d.Gen
		return m.to(s, proto.StateAlreadyCurrent, "the system already runs this toplevel")
	}
	if !m.open(s, d) {
		return m.to(s, proto.StateQueued, fmt.Sprintf("waiting for wave %d to open", d.Wave))
	}
	return m.fetch(s)
}

// open reports whether d may act: wave 0, or a running gate of one of the
// node's groups for its rollout has opened its wave.
func (m machine) open(s state, d *proto.Desired) bool {
	if d == nil {
		return false
	}
	if d.Wave == 0 {
		return true
	}
	for _, g := range m.groups {
		if gt, ok := s.Gates[g]; ok && gt.Rollout == d.Rollout && gt.State == proto.GateRunning && gt.OpenWave >= d.Wave {
			return true
		}
	}
	return false
}

func (m machine) fetch(s state) (state, []effect) {
	s, eff := m.to(s, proto.StateFetching, "")
	return s, append(eff, effFetch{s.Exec.Gen, s.Exec.Toplevel},
		effTimer{s.Exec.Gen, proto.StateFetching, m.timeouts.of(s.Desired, proto.StateFetching)})
}

func (m machine) rollback(s state, why string) (state, []effect) {
	s.Exec.Error = why
	if s.Previous == "" {
		return m.to(s, proto.StateRollbackFailed, why+"; no previous system recorded")
	}
	action := proto.ActionSwitch
	if s.Exec.Action == proto.ActionBoot {
		action = proto.ActionBoot
	}
	s, eff := m.to(s, proto.StateRollingBack, why)
	return s, append(eff, effRollback{gen: s.Exec.Gen, previous: s.Previous, action: action, env: hookEnv(s)})
}

// to moves to a new state: persist first, then tell the world. Reaching a
// terminal state releases a held Desired.
func (m machine) to(s state, st proto.ExecState, detail string) (state, []effect) {
	from := s.Exec.State
	s.Exec.State, s.Exec.Since = st, m.clock.Now().UnixMilli()
	if st != from {
		s.Hooks = "" // a phase's hooks belong to the state they ran in
		// So does the wait for a secret.
		s.WaitSecret = ""
	}
	if detail != "" && !st.OK() {
		s.Exec.Error = detail
	}
	if st.OK() {
		s.Exec.Error = ""
	}
	eff := []effect{effPersist{}, effEvent{from, st, detail}, effStatus{}}
	if st.Terminal() && s.Held != nil {
		held := s.Held
		s.Held = nil
		s2, more := m.onDesired(s, evDesired{d: held})
		return s2, append(eff, more...)
	}
	return s, eff
}

// resume continues a persisted execution after a restart.
func (m machine) resume(s state) (state, []effect) {
	gen := s.Exec.Gen
	switch s.Exec.State {
	case proto.StateFetching:
		return s, []effect{effFetch{gen, s.Exec.Toplevel}, effTimer{gen, proto.StateFetching, m.timeouts.of(s.Desired, proto.StateFetching)}}
	case proto.StateActivating:
		timer := effTimer{gen, proto.StateActivating, m.timeouts.of(s.Desired, proto.StateActivating)}
		if s.Hooks == hook.PreActivate {
			// The profile has not moved: the hooks run again, from the first.
			return s, []effect{effHooks{hook.PreActivate, hookEnv(s)}, timer}
		}
		return s, []effect{activate(s, true), timer}
	case proto.StateVerifying:
		timer := effTimer{gen, proto.StateVerifying, m.timeouts.of(s.Desired, proto.StateVerifying)}
		if s.Hooks == hook.PostActivate {
			// They had not passed: they run again, from the first.
			return s, []effect{effHooks{hook.PostActivate, hookEnv(s)}, timer}
		}
		return s, []effect{effChecks{gen, s.Desired.Checks, s.Exec.Toplevel}, timer}
	case proto.StateRollingBack:
		action := proto.ActionSwitch
		if s.Exec.Action == proto.ActionBoot {
			action = proto.ActionBoot
		}
		return s, []effect{effRollback{gen: gen, previous: s.Previous, action: action, env: hookEnv(s)}}
	case proto.StateRebooting:
		if m.bootID == s.BootBefore {
			// labd restarted, the machine did not: ask again.
			return s, []effect{effReboot{why: "boot the new system", gen: gen}, effTimer{gen, proto.StateRebooting, m.timeouts.of(s.Desired, proto.StateActivating)}}
		}
		s.Rebooted = true
		s, eff := m.to(s, proto.StateVerifying, "came back after the reboot")
		return m.verify(s, eff)
	}
	return s, nil
}

// booted records the boot id at start; after a reboot every check runs
// once, so that whoever waits for the machine sees it healthy (or not).
func (m machine) booted(s state) (state, []effect) {
	if s.LastBoot == m.bootID {
		return s, nil
	}
	first := s.LastBoot == ""
	s.LastBoot = m.bootID
	if first || s.Exec.State == proto.StateRebooting {
		return s, []effect{effPersist{}} // resume verifies a rebooting execution itself
	}
	return s, []effect{effPersist{}, effBootChecks{}}
}

// hasAll reports whether every required check name is configured.
func hasAll(configured, required []string) (bool, string) {
	for _, r := range required {
		if !slices.Contains(configured, r) {
			return false, r
		}
	}
	return true, ""
}
