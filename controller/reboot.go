package controller

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/lab-fleet/lab/internal/clock"
	"github.com/lab-fleet/lab/proto"
)

// Outcomes of one machine in an ordered reboot.
const (
	RebootDone    = "rebooted"  // came back: new boot id, online, checks passed
	RebootFailed  = "failed"    // came back unhealthy, or its reboot command failed (the node's acknowledgement says why)
	RebootRefused = "refused"   // the node refused the reboot (busy, bad signature, expired): its acknowledgement says why
	RebootTimeout = "timed-out" // not back within the deadline
	RebootSkipped = "skipped"   // offline, or not reached because an earlier machine failed
)

// RebootOptions tune an ordered reboot.
type RebootOptions struct {
	Key      *proto.PrivateKey // signs the reboot commands
	Deadline time.Duration     // per machine, for coming back healthy (default 10m)
	Progress func(RebootResult)
	Clock    clock.Clock // default the system clock
}

// RebootResult is one machine's part in an ordered reboot.
type RebootResult struct {
	Node   string        `json:"node"`
	State  string        `json:"state"`
	Detail string        `json:"detail,omitempty"`
	Took   time.Duration `json:"took"`
}

// RebootOrder sorts machines for rebooting: reboot order declared in their
// status (lower first), then name.
func (c *Controller) RebootOrder(nodes []string) []string {
	out := slices.Clone(nodes)
	order := func(n string) int {
		if v, _ := c.fleet.Get(n); v.Status != nil {
			return v.Status.Machine.RebootOrder
		}
		return 0
	}
	slices.SortFunc(out, func(a, b string) int { return cmp.Or(cmp.Compare(order(a), order(b)), cmp.Compare(a, b)) })
	return out
}

// Reboot reboots nodes one at a time in RebootOrder: each gets a signed
// reboot command and must come back — a new boot id, online, every check
// run after the reboot passing — within the deadline, then its declared
// reboot delay passes before the next. A machine that does not come back
// healthy stops the sequence: the rest are skipped, never waited for
// without bound.
func (c *Controller) Reboot(ctx context.Context, nodes []string, opts RebootOptions) ([]RebootResult, error) {
	if opts.Deadline == 0 {
		opts.Deadline = 10 * time.Minute
	}
	opts.Clock = clock.Or(opts.Clock)
	var out []RebootResult
	stop := false
	for _, n := range c.RebootOrder(nodes) {
		var r RebootResult
		if stop {
			r = RebootResult{Node: n, State: RebootSkipped, Detail: "not rebooted: an earlier machine did not come back healthy"}
		} else {
			var err error
			r, err = c.rebootOne(ctx, n, opts)
			if err != nil {
				return out, err
			}
			stop = r.State == RebootFailed || r.State == RebootRefused || r.State == RebootTimeout
		}
		out = append(out, r)
		if opts.Progress != nil {
			opts.Progress(r)
		}
		if r.State == RebootDone {
			v, _ := c.fleet.Get(n)
			if delay := time.Duration(v.Status.Machine.RebootDelay) * time.Second; delay > 0 {
				select {
				case <-ctx.Done():
					return out, ctx.Err()
				case <-time.After(delay):
				}
			}
		}
	}
	return out, nil
}

func (c *Controller) rebootOne(ctx context.Context, n string, opts RebootOptions) (RebootResult, error) {
	start := opts.Clock.Now()
	v, _ := c.fleet.Get(n)
	if !v.Online || v.Status == nil {
		return RebootResult{Node: n, State: RebootSkipped, Detail: "offline: not rebooted"}, nil
	}
	oldBoot := v.Status.BootID
	cmd := &proto.Command{Op: proto.OpReboot, Targets: []string{n}, Expires: start.Add(opts.Deadline).UnixMilli()}
	cmd.Stamp(c.from, start)
	if opts.Key != nil {
		if err := proto.Sign(cmd, *opts.Key); err != nil {
			return RebootResult{}, fmt.Errorf("sign reboot for %s: %w", n, err)
		}
	}
	b, err := proto.Seal(cmd)
	if err != nil {
		return RebootResult{}, err
	}
	if err := c.bus.Publish(ctx, c.topics.NodeCmd(n), b, false); err != nil {
		return RebootResult{}, fmt.Errorf("publish reboot for %s: %w", n, err)
	}
	deadline := time.NewTimer(opts.Deadline)
	defer deadline.Stop()
	tick := time.NewTicker(500 * time.Millisecond)
	changes, unwatch := c.fleet.Watch()
	defer unwatch()
	defer tick.Stop()
	accepted := ""
	for {
		v, _ := c.fleet.Get(n)
		took := opts.Clock.Now().Sub(start)
		// The node acknowledges the command by its id: a refusal or a
		// failed reboot command ends this machine's part at once.
		if ev := v.LastAck; ev != nil && ev.Cmd == cmd.ID && ev.Op == proto.OpReboot {
			switch ev.Outcome {
			case proto.CmdRefused:
				return RebootResult{Node: n, State: RebootRefused, Detail: ev.Detail, Took: took}, nil
			case proto.CmdFailed:
				return RebootResult{Node: n, State: RebootFailed, Detail: ev.Detail, Took: took}, nil
			case proto.CmdAccepted:
				accepted = fmt.Sprintf("; the node accepted the reboot at %s", time.UnixMilli(ev.TS).Format("15:04:05"))
			}
		}
		if s := v.Status; s != nil && v.Online && s.BootID != "" && s.BootID != oldBoot {
			if ok, detail, ready := checksAfter(s, start); ready {
				state := RebootDone
				if !ok {
					state = RebootFailed
				}
				return RebootResult{Node: n, State: state, Detail: detail, Took: took}, nil
			}
		}
		select {
		case <-ctx.Done():
			return RebootResult{}, ctx.Err()
		case <-deadline.C:
			return RebootResult{Node: n, State: RebootTimeout, Took: took,
				Detail: fmt.Sprintf("not back healthy within %s (boot id %q → %q, online %v%s)", opts.Deadline, oldBoot, statusBoot(v), v.Online, accepted)}, nil
		case <-changes:
		case <-tick.C:
		}
	}
}

// checksAfter tells whether every check in s ran after t (ready) and
// whether all passed. A node without checks is ready at once.
func checksAfter(s *proto.NodeStatus, t time.Time) (ok bool, detail string, ready bool) {
	ok = true
	for name, c := range s.Checks {
		if c.At < t.UnixMilli() {
			return false, "", false
		}
		if !c.OK {
			ok = false
			detail += fmt.Sprintf("%s: %s; ", name, c.Detail)
		}
	}
	if ok {
		detail = fmt.Sprintf("back with boot id %s, %d checks passed", s.BootID, len(s.Checks))
	}
	return ok, detail, true
}

func statusBoot(v NodeView) string {
	if v.Status == nil {
		return ""
	}
	return v.Status.BootID
}
