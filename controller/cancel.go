package controller

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// clearUnstarted clears the retained Desired of every target that has not
// started this rollout, so that one offline now finds nothing when it
// wakes. A node that already took it (queued) is told by its gate.
func (r *run) clearUnstarted(ctx context.Context) error {
	for _, n := range r.st.list() {
		v, _ := r.c.fleet.Get(n.Node)
		if n.State == "" && !v.Started(r.st.plan.ID) && v.DesiredGen == r.st.gens[n.Node] && v.DesiredGen != 0 {
			if err := r.c.bus.Publish(ctx, r.c.topics.NodeDesired(n.Node), nil, true); err != nil {
				return fmt.Errorf("clear desired of %s: %w", n.Node, err)
			}
		}
	}
	return nil
}

// cancelledBy starts the reason of a cancelled rollout.
const cancelledBy = "cancelled by "

// cancelledElsewhere reports whether the rollout was ended by someone
// else (labctl rollout cancel), and by whom: its retained state says it is
// over while this run still follows it, or one of its gates was cancelled.
func (r *run) cancelledElsewhere() (string, bool) {
	if rs, ok := r.c.fleet.Rollout(r.st.plan.ID); ok && rs.State.Terminal() && rs.CreatedAt == r.st.created.UnixMilli() {
		return rs.From, true
	}
	for _, g := range r.st.gates {
		gt, ok := r.c.fleet.Gate(g)
		if ok && gt.Rollout == r.st.plan.ID && gt.State == proto.GateCancelled && gt.Seq > r.seq {
			return gt.From, true
		}
	}
	return "", false
}

// rollbackSwitched sends every target that succeeded back to the system it
// ran before, as a rollout of its own (<id>-rollback, one wave).
func (r *run) rollbackSwitched(ctx context.Context) (*Result, error) {
	if r.st.signed != nil {
		return r.rollbackSigned(ctx)
	}
	back := Plan{ID: rollbackID(r.st.plan.ID), Targets: map[string]string{}, Action: r.st.plan.Action, Reboot: r.st.plan.Reboot,
		MaxFailures: Size{Percent: 100}, WaveDeadline: r.st.plan.WaveDeadline}
	for _, n := range r.st.list() {
		if n.State != proto.StateSucceeded {
			continue
		}
		v, _ := r.c.fleet.Get(n.Node)
		if v.Status == nil || proto.ValidStorePath(v.Status.Previous) != nil {
			r.log.Warn("cannot roll back: no previous system recorded", "node", n.Node)
			continue
		}
		back.Targets[n.Node] = v.Status.Previous
	}
	if len(back.Targets) == 0 {
		return nil, nil
	}
	r.log.Info("rolling back the targets that switched", "rollout", back.ID, "targets", len(back.Targets))
	opts := r.opts
	opts.OnWave = nil
	for i := 2; ; i++ {
		res, err := r.c.Run(ctx, back, opts)
		if !errors.Is(err, ErrRolloutExists) || i > 9 {
			return res, err
		}
		back.ID = rollbackID(r.st.plan.ID + "-" + strconv.Itoa(i)) // <id>-2-rollback: the id is taken
	}
}

func rollbackID(id string) string {
	const suffix = "-rollback"
	if len(id)+len(suffix) > 63 {
		id = id[:63-len(suffix)]
	}
	return id + suffix
}

// Cancel stops a rollout that may be followed by another labctl or by
// nobody: its gates say cancelled (queued targets report cancelled), a
// cancel command reaches the targets online that have not started, the
// retained Desired of every target that never started is cleared (so an
// offline one finds nothing when it wakes), and the retained state and
// the record say cancelled. Targets already activating finish or roll
// back: a node refuses a cancel once its profile may have moved.
func (c *Controller) Cancel(ctx context.Context, rec *Record, opts Options) error {
	r, err := c.fromRecord(rec, opts)
	if err != nil {
		return err
	}
	plan, opts := r.st.plan, r.opts
	if err := r.publishGates(ctx, rec.Opened, proto.GateCancelled); err != nil {
		return err
	}
	if err := publishCancel(ctx, c.bus, c.topics, plan.ID, c.from, r.gateKey(), opts.Clock.Now()); err != nil {
		return err
	}
	r.st.update(c.fleet, nil)
	if err := r.clearUnstarted(ctx); err != nil {
		return err
	}
	by := c.from
	if opts.By != "" {
		by = opts.By
	}
	r.st.cancelled = true
	r.st.halt(cancelledBy + by)
	if err := c.publishState(ctx, r.st, true); err != nil {
		return err
	}
	return r.saveDone(true)
}

// publishCancel tells every node to cancel rollout, signed with key when
// there is one: the targets online that have not started it report
// cancelled (a node refuses it once its profile may have moved, and
// ignores it unless it pins key).
func publishCancel(ctx context.Context, b Bus, topics proto.Topics, rollout, from string, key *proto.PrivateKey, now time.Time) error {
	cmd := &proto.Command{Op: proto.OpCancel, Rollout: rollout, Expires: now.Add(time.Hour).UnixMilli()}
	cmd.Stamp(from, now)
	if key != nil {
		if err := proto.Sign(cmd, *key); err != nil {
			return fmt.Errorf("sign cancel: %w", err)
		}
	}
	msg, err := proto.Seal(cmd)
	if err != nil {
		return err
	}
	if err := b.Publish(ctx, topics.AllCmd(), msg, false); err != nil {
		return fmt.Errorf("publish cancel: %w", err)
	}
	return nil
}
