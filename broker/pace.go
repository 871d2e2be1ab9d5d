package broker

import (
	"bytes"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// paceHook makes a burst wait for a subscriber's queue instead of being
// dropped. mochi (v2.7.9) puts every message for a client into that
// client's outbound queue (Config.ClientQueue slots) without waiting, and
// drops what does not fit. A subscriber of the whole fleet — labctl, the
// controller, a dashboard — gets every node's retained status and presence
// at once when it subscribes, and every node's status at once in a
// rollout: above ~1,000 nodes, with the default queue, it silently missed
// nodes (labctl publish --on @group selected from a partial fleet).
//
// mochi asks the ACL hooks about every delivery, in the goroutine that
// delivers it (the subscriber's own for retained messages, the publisher's
// for live ones), just before queueing it. This hook answers "no opinion"
// (the access hook decides) at once while the subscriber's queue is less
// than half full; above that, deliveries to that subscriber wait their turn
// (one at a time, so that a crowd of waiting publishers cannot all see room
// and overflow it together) until the queue is below half again. The other
// half is headroom for deliveries that passed the check at the same moment.
//
// A subscriber whose queue does not move for paceStall, or that cannot take
// a delivery within paceMaxWait (a healthy one drains half its queue in
// milliseconds), is considered stuck or too slow and is no longer waited
// for until its queue drains to a quarter: one slow dashboard must not set
// the pace of the fleet's publishers (a node waits for the broker's
// acknowledgement of its status after an activation), and a dead
// connection costs them one paceStall per drain, not one per message. What
// is dropped for it is logged (OnPublishDropped).
//
// mochi does not export the queue: its length is read with reflect from
// ClientState's "outbound" channel (len of a channel is safe to read
// concurrently). If a mochi upgrade renames it, newPaceHook returns nil and
// the broker runs without pacing (TestPaceHookFindsTheQueue fails).
type paceHook struct {
	mqtt.HookBase
	field   int      // index of ClientState.outbound
	clients sync.Map // *mqtt.Client → *paceState
}

// paceState is one subscriber's turn lock, stuck flag and drop count.
type paceState struct {
	turn    sync.Mutex
	stalled atomic.Bool

	mu       sync.Mutex
	dropped  int       // since the last warning
	warnedAt time.Time // last warning
}

const (
	paceStall   = time.Second
	paceMaxWait = 5 * time.Second
	paceTick    = 200 * time.Microsecond
)

func newPaceHook() *paceHook {
	f, ok := reflect.TypeFor[mqtt.ClientState]().FieldByName("outbound")
	if !ok || f.Type.Kind() != reflect.Chan || len(f.Index) != 1 {
		return nil
	}
	return &paceHook{field: f.Index[0]}
}

func (h *paceHook) ID() string { return "lab-pace" }

func (h *paceHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnACLCheck, mqtt.OnDisconnect, mqtt.OnPublishDropped}, []byte{b})
}

// queue returns the length and capacity of cl's outbound queue.
func (h *paceHook) queue(cl *mqtt.Client) (n, capacity int) {
	q := reflect.ValueOf(&cl.State).Elem().Field(h.field)
	if q.IsNil() {
		return 0, 0
	}
	return q.Len(), q.Cap()
}

// OnACLCheck waits, for a delivery (write == false) to a network client,
// while that client's queue is too full; it never decides the check.
func (h *paceHook) OnACLCheck(cl *mqtt.Client, _ string, write bool) bool {
	if write || cl.Net.Inline || cl.Net.Conn == nil {
		return false
	}
	n, capacity := h.queue(cl)
	high := capacity / 2
	if capacity < 4 || n < high {
		if n <= capacity/4 {
			if st, ok := h.clients.Load(cl); ok {
				st.(*paceState).stalled.Store(false)
			}
		}
		return false
	}
	v, _ := h.clients.LoadOrStore(cl, new(paceState))
	st := v.(*paceState)
	if st.stalled.Load() {
		return false
	}
	st.turn.Lock()
	defer st.turn.Unlock()
	start := time.Now()
	last, progress := n, start
	for !st.stalled.Load() && !cl.Closed() {
		if n, _ = h.queue(cl); n < high {
			return false
		}
		now := time.Now()
		if n < last {
			last, progress = n, now
		}
		if now.Sub(progress) > paceStall || now.Sub(start) > paceMaxWait {
			st.stalled.Store(true)
			return false
		}
		time.Sleep(paceTick)
	}
	return false
}

func (h *paceHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.clients.Delete(cl) }

// paceWarnEvery limits the warnings about one client's dropped messages.
const paceWarnEvery = 10 * time.Second

// OnPublishDropped warns, at most every paceWarnEvery per client, that
// messages for cl were dropped because its queue stayed full: mochi counts
// them in $SYS only, and a subscriber that misses statuses should not be a
// mystery in the broker's log.
func (h *paceHook) OnPublishDropped(cl *mqtt.Client, _ packets.Packet) {
	v, _ := h.clients.LoadOrStore(cl, new(paceState))
	st := v.(*paceState)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.dropped++
	if time.Since(st.warnedAt) < paceWarnEvery {
		return
	}
	h.Log.Warn("dropped messages for a client whose queue was full (broker.client_queue)",
		"client", cl.ID, "dropped", st.dropped, "stuck", st.stalled.Load())
	st.dropped, st.warnedAt = 0, time.Now()
}
