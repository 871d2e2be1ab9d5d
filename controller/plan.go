package controller

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// ErrInvalidPlan wraps every reason a plan is refused before anything is
// published.
var ErrInvalidPlan = errors.New("invalid rollout")

// Plan is a rollout to start.
type Plan struct {
	ID       string            // [a-z0-9-]{1,63}; NewID makes one
	Targets  map[string]string // node → toplevel store path
	Action   proto.Action      // default switch
	Reboot   proto.RebootPolicy
	Checks   []string       // local checks every target must pass (names)
	Timeouts proto.Timeouts // 0 = the node's defaults

	// Groups maps a targeted group to the system of its members: a node
	// that joins the group while the rollout runs becomes a target of
	// the current wave (continuous rollout).
	Groups map[string]string

	Strategy Strategy           // how targets are split into waves (default: all at once)
	Machines map[string]Machine // planning metadata by node (reboot order, dependencies); missing = defaults
	// MaxFailures is how many failed targets (failed, rolled back, timed
	// out, rejected) are tolerated; one more halts the rollout: no further
	// wave opens. The zero value halts at the first failure.
	MaxFailures Size
	// MinExecuted is how many targets must have finished before a
	// percentage MaxFailures counts (default 5, at most the number of
	// targets), so that one early failure of a large fleet is not 100%.
	MinExecuted int
	// WaveDeadline is how long a wave waits for targets that are offline
	// or still busy before the next wave opens (default 10m). They stay
	// pending, not failed, and converge when they can.
	WaveDeadline time.Duration
	// OnFailure is what a halt does to the targets that already switched:
	// OnFailureHalt leaves them, OnFailureRollback switches them back.
	OnFailure string
	// NotBefore schedules the rollout: nothing is published before it
	// (zero: at once). Window limits it to a daily maintenance window in
	// the controller's time zone: outside it no wave opens, and a wave in
	// progress finishes.
	NotBefore time.Time
	Window    Window
}

// What a halted rollout does to targets that already switched.
const (
	OnFailureHalt     = "halt"
	OnFailureRollback = "rollback"
)

// DefaultWaveDeadline is how long a wave waits for pending targets.
const DefaultWaveDeadline = 10 * time.Minute

// Waves plans the rollout's waves from its strategy and machine metadata.
func (p *Plan) Waves() ([][]string, error) {
	ms := make([]Machine, 0, len(p.Targets))
	for _, n := range p.Nodes() {
		m := p.Machines[n]
		m.Name = n
		ms = append(ms, m)
	}
	return PlanWaves(ms, p.Strategy)
}

// NewID returns a rollout id like r-20261124-153012-ab12.
func NewID(now time.Time) string {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return "r-" + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// Validate checks the whole plan and names what is wrong.
func (p *Plan) Validate() error {
	if p.Action == "" {
		p.Action = proto.ActionSwitch
	}
	if p.Action == proto.ActionBoot && p.Reboot == "" {
		p.Reboot = proto.RebootAlways // a boot entry is confirmed by booting it
	}
	if err := proto.ValidID(p.ID); err != nil {
		return fmt.Errorf("%w: id: %v", ErrInvalidPlan, err)
	}
	if len(p.Targets) == 0 {
		return fmt.Errorf("%w: no targets", ErrInvalidPlan)
	}
	if !p.Action.Valid() {
		return fmt.Errorf("%w: action %q: want switch, boot or test", ErrInvalidPlan, p.Action)
	}
	if !p.Reboot.Valid() {
		return fmt.Errorf("%w: reboot %q: want never, if-needed or always", ErrInvalidPlan, p.Reboot)
	}
	for _, n := range p.Nodes() {
		if err := proto.ValidID(n); err != nil {
			return fmt.Errorf("%w: node %q: %v", ErrInvalidPlan, n, err)
		}
		if err := proto.ValidStorePath(p.Targets[n]); err != nil {
			return fmt.Errorf("%w: toplevel of %s: %v", ErrInvalidPlan, n, err)
		}
	}
	for g, tl := range p.Groups {
		if err := proto.ValidID(g); err != nil {
			return fmt.Errorf("%w: group %q: %v", ErrInvalidPlan, g, err)
		}
		if err := proto.ValidStorePath(tl); err != nil {
			return fmt.Errorf("%w: toplevel for @%s: %v", ErrInvalidPlan, g, err)
		}
	}
	switch p.OnFailure {
	case "":
		p.OnFailure = OnFailureHalt
	case OnFailureHalt, OnFailureRollback:
	default:
		return fieldErr(FieldOnFailure, "%w: %s %q: want halt or rollback", ErrInvalidPlan, FieldOnFailure, p.OnFailure)
	}
	if p.WaveDeadline < 0 {
		return fieldErr(FieldWaveDeadline, "%w: %s %s is negative", ErrInvalidPlan, FieldWaveDeadline, p.WaveDeadline)
	}
	if p.WaveDeadline == 0 {
		p.WaveDeadline = DefaultWaveDeadline
	}
	if p.MinExecuted < 0 {
		return fieldErr(FieldMinExecuted, "%w: %s %d is negative", ErrInvalidPlan, FieldMinExecuted, p.MinExecuted)
	}
	if p.MinExecuted == 0 {
		p.MinExecuted = 5
	}
	if _, err := p.Waves(); err != nil {
		if !errors.Is(err, ErrInvalidPlan) {
			err = fmt.Errorf("%w: %w", ErrInvalidPlan, err)
		}
		return err
	}
	for _, c := range p.Checks {
		if err := proto.ValidID(c); err != nil {
			return fmt.Errorf("%w: check %q: %v", ErrInvalidPlan, c, err)
		}
	}
	return nil
}

// Nodes returns the targets by name.
func (p *Plan) Nodes() []string {
	out := make([]string, 0, len(p.Targets))
	for n := range p.Targets {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// nextGen is the gen for a node's new Desired: the current time in Unix ms,
// or one more than the node's last retained desired gen if that is later.
// It grows across controllers and restarts without shared state.
func nextGen(now time.Time, last uint64) uint64 {
	g := uint64(now.UnixMilli())
	if last >= g {
		g = last + 1
	}
	return g
}
