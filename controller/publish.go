package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// publishInFlight bounds the Desired publishes awaiting their
// acknowledgement: one at a time, a 10,000-node rollout waits 10,000
// round trips (and the broker's store) before the last node hears of it.
const publishInFlight = 64

// publishDesired signs and publishes the Desired of every node in nodes,
// retained, up to publishInFlight at once, and returns the gens the broker
// acknowledged (all of them, unless err says why not).
func (r *run) publishDesired(ctx context.Context, nodes []string) (map[string]uint64, error) {
	now := r.opts.Clock.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		gens     = make(map[string]uint64, len(nodes))
		slots    = make(chan struct{}, publishInFlight)
	)
	for _, n := range nodes {
		w := 0
		if r.st.gated[n] {
			w = r.st.wave[n] + 1
		}
		// Signed here, in order: the generation depends on the fleet's
		// view and the state, which only this goroutine touches.
		topic, b, gen, err := r.signOne(n, r.st.plan.Targets[n], w, now)
		if err != nil {
			cancel()
			wg.Wait()
			return gens, err
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			err := r.c.bus.Publish(ctx, topic, b, true)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("publish desired for %s: %w", n, err)
				}
				cancel()
				return
			}
			gens[n] = gen
		}()
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return gens, firstErr
}

// signOne builds, signs and encodes the Desired of node n, with a gen
// newer than any it had.
func (r *run) signOne(n, toplevel string, wave int, now time.Time) (topic string, payload []byte, gen uint64, err error) {
	if r.st.signed != nil {
		return r.presigned(n)
	}
	v, _ := r.c.fleet.Get(n)
	gen = nextGen(now, max(v.DesiredGen, r.st.gens[n]))
	topic, payload, err = r.signGen(n, toplevel, wave, gen, now)
	return topic, payload, gen, err
}

// signGen builds, signs and encodes the Desired of node n with gen.
func (r *run) signGen(n, toplevel string, wave int, gen uint64, now time.Time) (topic string, payload []byte, err error) {
	if r.st.signed != nil {
		topic, payload, _, err = r.presigned(n)
		return topic, payload, err
	}
	p := r.st.plan
	d := &proto.Desired{Node: n, Rollout: p.ID, Gen: gen, Toplevel: toplevel,
		Action: p.Action, Reboot: p.Reboot, Wave: wave, Checks: p.Checks, Timeouts: p.Timeouts}
	d.Stamp(r.c.from, now)
	if r.opts.Key != nil {
		if err := proto.Sign(d, *r.opts.Key); err != nil {
			return "", nil, fmt.Errorf("sign desired for %s: %w", n, err)
		}
	}
	b, err := proto.Seal(d)
	if err != nil {
		return "", nil, fmt.Errorf("desired for %s: %w", n, err)
	}
	return r.c.topics.NodeDesired(n), b, nil
}

func (r *run) publishGates(ctx context.Context, openWave int, state proto.GateState) error {
	for _, g := range r.st.gates {
		seq := uint64(r.opts.Clock.Now().UnixMilli())
		if seq <= r.seq {
			seq = r.seq + 1
		}
		r.seq = seq
		gt := &proto.Gate{Group: g, Rollout: r.st.plan.ID, OpenWave: openWave, State: state, Seq: seq}
		gt.Stamp(r.c.from, r.opts.Clock.Now())
		if k := r.gateKey(); k != nil {
			if err := proto.Sign(gt, *k); err != nil {
				return fmt.Errorf("sign gate for %s: %w", g, err)
			}
		}
		b, err := proto.Seal(gt)
		if err != nil {
			return fmt.Errorf("gate for %s: %w", g, err)
		}
		if err := r.c.bus.Publish(ctx, r.c.topics.GroupGate(g), b, true); err != nil {
			return fmt.Errorf("publish gate for %s: %w", g, err)
		}
	}
	return nil
}

// publishState publishes the retained RolloutState.
func (c *Controller) publishState(ctx context.Context, tr *rolloutState, done bool) error {
	s := tr.state(done)
	s.Stamp(c.from, time.Now())
	b, err := sealRolloutState(s)
	if err != nil {
		return fmt.Errorf("rollout state: %w", err)
	}
	return c.bus.Publish(ctx, c.topics.Rollout(tr.plan.ID), b, true)
}

// sealRolloutState seals s; when it is over the size limit (a rollout of
// many thousand targets) it leaves targets out of Nodes, least
// interesting first — succeeded, then the rest that are not in trouble —
// and counts them in Omitted.
func sealRolloutState(s *proto.RolloutState) ([]byte, error) {
	b, err := proto.Seal(s)
	if !errors.Is(err, proto.ErrTooLarge) {
		return b, err
	}
	trouble := func(p proto.NodeProgress) bool {
		switch p.State {
		case proto.StateFailed, proto.StateRolledBack, proto.StateRollbackFailed, proto.StateTimedOut, proto.StateRejected:
			return true
		}
		return false
	}
	for _, drop := range []func(proto.NodeProgress) bool{
		func(p proto.NodeProgress) bool {
			return p.State == proto.StateSucceeded || p.State == proto.StateAlreadyCurrent
		},
		func(p proto.NodeProgress) bool { return !trouble(p) },
		func(proto.NodeProgress) bool { return true },
	} {
		for n, p := range s.Nodes {
			if drop(p) {
				delete(s.Nodes, n)
				s.Omitted++
			}
		}
		if b, err = proto.Seal(s); !errors.Is(err, proto.ErrTooLarge) {
			return b, err
		}
	}
	// Waves alone are too large: say so rather than publish nothing.
	s.Waves = nil
	return proto.Seal(s)
}
