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
