package controller

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// After a reconnect, reassert runs once no message arrived for
// reassertQuiet since the reconnect was noticed (the retained flood is
// over, or there was none), or reassertWait passed.
const (
	reassertQuiet = 300 * time.Millisecond
	reassertWait  = 10 * time.Second
)

// reassert publishes again, after a reconnect, the part of the rollout
// that the broker no longer holds: a broker restarted on an empty or older
// store (a new host, a restored backup, a crash in the moment between
// acknowledging and storing) would otherwise leave the targets that had
// not yet taken their Desired waiting for it forever. A Desired the broker
// sent again since the connection was lost (lost), one cleared since, and
// one superseded by a newer rollout are left alone; the rest go out again
// with the same gen, which a node that already has it ignores. The gates
// and the rollout's state are published again too.
func (r *run) reassert(ctx context.Context, lost time.Time) error {
	var missing []string
	if !r.st.halted {
		for n, gen := range r.st.gens {
			v, _ := r.c.fleet.Get(n)
			resent := v.DesiredSeen.After(lost) && (v.DesiredLast == gen || v.DesiredLast == 0)
			if v.DesiredGen > gen || resent {
				continue
			}
			missing = append(missing, n)
		}
	}
	slices.Sort(missing)
	now := r.opts.Clock.Now()
	for _, n := range missing {
		wave := 0
		if r.st.gated[n] {
			wave = r.st.wave[n] + 1
		}
		topic, b, err := r.signGen(n, r.st.plan.Targets[n], wave, r.st.gens[n], now)
		if err != nil {
			return err
		}
		if err := r.c.bus.Publish(ctx, topic, b, true); err != nil {
			return fmt.Errorf("publish desired for %s again: %w", n, err)
		}
	}
	if len(missing) > 0 {
		r.log.Info("the broker had lost the desired state of some targets: published again", "targets", len(missing), "first", missing[:min(len(missing), 10)])
	}
	if r.st.opened > 0 {
		state := proto.GateRunning
		if r.st.halted {
			state = proto.GateCancelled
		}
		if err := r.publishGates(ctx, r.st.opened, state); err != nil {
			return err
		}
	}
	return r.c.publishState(ctx, r.st, false)
}

// resyncQuiet is how long a follower waits without any message before it
// reads the retained state again.
const resyncQuiet = 10 * time.Second

// needResync reports whether the follower has heard nothing for
// resyncQuiet, and has not resynchronised in that time either.
func needResync(lastMessage, lastResync, now time.Time) bool {
	return now.Sub(lastMessage) >= resyncQuiet && now.Sub(lastResync) >= resyncQuiet
}
