package controller

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// Options tune a rollout run.
type Options struct {
	Key      *proto.PrivateKey // operator key signing every Desired; nil = unsigned
	Timeout  time.Duration     // overall deadline for waiting, default 10m
	NoWait   bool              // publish and return at once
	Progress func(NodeResult)  // called on every change of a target's state
	Clock    func() time.Time  // default time.Now
	Logger   *slog.Logger
}

// Controller drives rollouts over a Bus, reading progress from a Fleet fed
// by the same connection.
type Controller struct {
	bus    Bus
	fleet  *Fleet
	topics proto.Topics
	from   string
}

// New returns a controller; from names it in envelopes.
func New(b Bus, fleet *Fleet, topics proto.Topics, from string) *Controller {
	return &Controller{bus: b, fleet: fleet, topics: topics, from: from}
}

// Run publishes the plan's Desired states and follows the targets until
// each is terminal or opts.Timeout passes.
func (c *Controller) Run(ctx context.Context, plan Plan, opts Options) (*Result, error) {
	if err := plan.Validate(); err != nil {
		return nil, err
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Minute
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	log := opts.Logger.With("rollout", plan.ID)
	now := opts.Clock()
	tr := newTracker(plan, now)
	for _, n := range plan.Nodes() {
		v, _ := c.fleet.Get(n)
		d := &proto.Desired{Node: n, Rollout: plan.ID, Gen: nextGen(now, v.DesiredGen), Toplevel: plan.Targets[n],
			Action: plan.Action, Reboot: plan.Reboot, Checks: plan.Checks, Timeouts: plan.Timeouts}
		d.Stamp(c.from, now)
		if opts.Key != nil {
			if err := proto.Sign(d, *opts.Key); err != nil {
				return nil, fmt.Errorf("sign desired for %s: %w", n, err)
			}
		}
		b, err := proto.Seal(d)
		if err != nil {
			return nil, fmt.Errorf("desired for %s: %w", n, err)
		}
		if err := c.bus.Publish(ctx, c.topics.NodeDesired(n), b, true); err != nil {
			return nil, fmt.Errorf("publish desired for %s: %w", n, err)
		}
		tr.gens[n] = d.Gen
	}
	log.Debug("rollout published", "targets", len(plan.Targets))
	tr.update(c.fleet, opts.Progress)
	if err := c.publishState(ctx, tr, false); err != nil {
		return nil, err
	}
	if opts.NoWait {
		return tr.result(false), nil
	}
	res, err := c.follow(ctx, tr, opts)
	if err != nil {
		return nil, err
	}
	log.Debug("rollout ended", "outcome", res.Outcome)
	return res, nil
}

// follow waits for every target to be terminal, recomputing progress from
// the retained status on every change and once a second.
func (c *Controller) follow(ctx context.Context, tr *tracker, opts Options) (*Result, error) {
	deadline := time.NewTimer(opts.Timeout)
	defer deadline.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastPublish := time.Time{}
	for {
		changed := tr.update(c.fleet, opts.Progress)
		if tr.done() {
			break
		}
		if changed && time.Since(lastPublish) > 200*time.Millisecond {
			if err := c.publishState(ctx, tr, false); err != nil {
				opts.Logger.Warn("publish rollout state", "err", err)
			}
			lastPublish = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("rollout %s: %w", tr.plan.ID, ctx.Err())
		case <-deadline.C:
			return c.finish(ctx, tr, opts)
		case <-c.fleet.Changed():
		case <-tick.C:
		}
	}
	return c.finish(ctx, tr, opts)
}

func (c *Controller) finish(ctx context.Context, tr *tracker, opts Options) (*Result, error) {
	if err := c.publishState(ctx, tr, true); err != nil {
		opts.Logger.Warn("publish final rollout state", "err", err)
	}
	return tr.result(true), nil
}

// publishState publishes the retained RolloutState.
func (c *Controller) publishState(ctx context.Context, tr *tracker, done bool) error {
	s := tr.state(done)
	s.Stamp(c.from, time.Now())
	b, err := proto.Seal(s)
	if err != nil {
		return fmt.Errorf("rollout state: %w", err)
	}
	return c.bus.Publish(ctx, c.topics.Rollout(tr.plan.ID), b, true)
}
