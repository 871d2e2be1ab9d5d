package controller

import (
	"time"

	"github.com/lab-fleet/lab/proto"
)

// HistorySize is how many happenings a Fleet keeps: the newest node
// events and rollout changes it saw since it started, fleet-wide.
const HistorySize = 5000

// Happening is one entry of the fleet's recent history: a node's event,
// or a change of a rollout's phase, open wave or halt. Exactly one of
// Event and Rollout is set. Events are not retained by the broker, so the
// history starts when the view does.
type Happening struct {
	At      time.Time // the sender's time stamp
	Event   *proto.Event
	Rollout *RolloutChange
}

// RolloutChange is what changed in a rollout's retained state.
type RolloutChange struct {
	Rollout  string
	State    proto.RolloutPhase
	OpenWave int
	Waves    int
	Halted   bool
	Reason   string
	Counters proto.Counters
}

// RolloutID is the rollout a happening belongs to ("" for an event outside one).
func (h Happening) RolloutID() string {
	if h.Event != nil {
		return h.Event.Rollout
	}
	return h.Rollout.Rollout
}

// history is a ring of the newest HistorySize happenings; the Fleet's
// lock guards it.
type history struct {
	ring []Happening
	next int // where the next one goes once the ring is full
}

func (h *history) add(x Happening) {
	if len(h.ring) < HistorySize {
		h.ring = append(h.ring, x)
		return
	}
	h.ring[h.next] = x
	h.next = (h.next + 1) % HistorySize
}

// each calls fn on every happening, oldest first, until it returns false.
func (h *history) each(fn func(Happening) bool) {
	for i := range h.ring {
		if !fn(h.ring[(h.next+i)%len(h.ring)]) {
			return
		}
	}
}

// History returns the newest limit happenings that match (nil: all),
// oldest first.
func (f *Fleet) History(match func(Happening) bool, limit int) []Happening {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Happening
	f.history.each(func(h Happening) bool {
		if match == nil || match(h) {
			out = append(out, h)
		}
		return true
	})
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}
