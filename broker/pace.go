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
// for live ones), just before queueing it. This hook asks the ACL hook and
// answers at once while the subscriber's queue is less than half full;
// above that, deliveries to that subscriber wait their turn
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
	field   int       // index of ClientState.outbound
	acl     mqtt.Hook // asked first: only allowed deliveries are paced
	clients sync.Map  // *mqtt.Client → *paceState
}

// paceState is one subscriber's turn lock, stuck flag, deliveries in
// transit to its queue and drop count.
type paceState struct {
	turn       sync.Mutex
	stalled    atomic.Bool
	inTransit  atomic.Int64
	lastQueued atomic.Int64 // UnixNano of the last delivery queued or dropped

	mu       sync.Mutex
	dropped  int       // since the last warning
	warnedAt time.Time // last warning
}

const (
	paceStall   = time.Second
	paceMaxWait = 5 * time.Second
	paceStale   = time.Second
	paceTick    = 200 * time.Microsecond
)

// newPaceHook returns the pace hook in front of acl, the hook that decides
// who may read and write what (the access hook, or mochi's allow-all hook
// without identities); nil if this mochi version hides its client queue.
func newPaceHook(acl mqtt.Hook) *paceHook {
	f, ok := reflect.TypeFor[mqtt.ClientState]().FieldByName("outbound")
	if !ok || f.Type.Kind() != reflect.Chan || len(f.Index) != 1 {
		return nil
	}
	return &paceHook{field: f.Index[0], acl: acl}
}

func (h *paceHook) ID() string { return "lab-pace" }

func (h *paceHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnACLCheck, mqtt.OnQosPublish, mqtt.OnPacketRead,
		mqtt.OnDisconnect, mqtt.OnPublishDropped}, []byte{b})
}

// queue returns the length and capacity of cl's outbound queue.
func (h *paceHook) queue(cl *mqtt.Client) (n, capacity int) {
	q := reflect.ValueOf(&cl.State).Elem().Field(h.field)
	if q.IsNil() {
		return 0, 0
	}
	return q.Len(), q.Cap()
}

// state returns cl's pacing state, creating it.
func (h *paceHook) state(cl *mqtt.Client) *paceState {
	if v, ok := h.clients.Load(cl); ok {
		return v.(*paceState)
	}
	v, _ := h.clients.LoadOrStore(cl, new(paceState))
	return v.(*paceState)
}

// load is how full cl's queue is: its length, and the deliveries that
// passed the check and have not reached the queue yet. Those wait in mochi
// for the client's lock (to number the message), which the client's
// writer holds while it is blocked on a slow socket: hundreds of
// publishers could pass a check on the queue alone and then overflow it
// together. The count forgets what it could not account for (a delivery
// that failed before the queue) after paceStale without any message
// queued.
func (h *paceHook) load(cl *mqtt.Client, st *paceState) int {
	t := st.inTransit.Load()
	if t > 0 && time.Since(time.Unix(0, st.lastQueued.Load())) > paceStale {
		st.inTransit.Store(0)
		t = 0
	}
	n, _ := h.queue(cl)
	return n + int(t)
}

// OnACLCheck decides with the ACL hook and, for an allowed delivery
// (write == false) to a network client, first waits while that client's
// queue is half full. A refusal returns false, and mochi asks the next hook
// — the ACL hook itself, which refuses again.
func (h *paceHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if !h.acl.OnACLCheck(cl, topic, write) {
		return false
	}
	if write || cl.Net.Inline || cl.Net.Conn == nil {
		return true
	}
	_, capacity := h.queue(cl)
	if capacity < 4 {
		return true
	}
	high := capacity / 2
	st := h.state(cl)
	defer st.inTransit.Add(1) // until OnQosPublish or OnPublishDropped
	n := h.load(cl, st)
	if n < high {
		if n <= capacity/4 {
			st.stalled.Store(false)
		}
		return true
	}
	if st.stalled.Load() {
		return true
	}
	st.turn.Lock()
	defer st.turn.Unlock()
	start := time.Now()
	last, progress := n, start
	for !st.stalled.Load() && !cl.Closed() {
		if n = h.load(cl, st); n < high {
			return true
		}
		now := time.Now()
		if n < last {
			last, progress = n, now
		}
		if now.Sub(progress) > paceStall || now.Sub(start) > paceMaxWait {
			st.stalled.Store(true)
			return true
		}
		time.Sleep(paceTick)
	}
	return true
}

// OnPacketRead gives back the send quota that mochi (v2.7.9) loses on the
// acknowledgement of a message it held back. Past a client's Receive
// Maximum, mochi holds further messages and releases one each time the
// client sends a packet — deleting it from the in-flight messages as it
// sends it, so that its PUBACK finds nothing and does not return the quota
// it took. Each held message cost the client one slot of its Receive
// Maximum for good, until nothing was released any more: a client with a
// small Receive Maximum, or labctl falling 65,535 messages behind while
// following 10,000 nodes on a busy machine, stalled and missed the rest. A
// PUBACK for a packet id not in flight is such an acknowledgement (or a
// duplicate: the quota never exceeds the client's Receive Maximum).
func (h *paceHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Puback {
		if _, ok := cl.State.Inflight.Get(pk.PacketID); !ok {
			cl.State.Inflight.IncreaseSendQuota()
		}
	}
	return pk, nil
}

// OnQosPublish: a QoS 1 delivery is about to enter cl's queue.
// (mochi also calls it for messages queued for a disconnected session,
// whose client never passed OnACLCheck: no state is made for those.)
func (h *paceHook) OnQosPublish(cl *mqtt.Client, _ packets.Packet, _ int64, _ int) {
	if v, ok := h.clients.Load(cl); ok {
		h.queued(v.(*paceState))
	}
}

// queued accounts for a delivery that left transit (queued or dropped).
func (h *paceHook) queued(st *paceState) {
	st.lastQueued.Store(time.Now().UnixNano())
	if st.inTransit.Add(-1) < 0 {
		st.inTransit.Store(0) // a resend on reconnect, not admitted here
	}
}

func (h *paceHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.clients.Delete(cl) }

// paceWarnEvery limits the warnings about one client's dropped messages.
const paceWarnEvery = 10 * time.Second

// OnPublishDropped warns, at most every paceWarnEvery per client, that
// messages for cl were dropped because its queue stayed full: mochi counts
// them in $SYS only, and a subscriber that misses statuses should not be a
// mystery in the broker's log.
func (h *paceHook) OnPublishDropped(cl *mqtt.Client, _ packets.Packet) {
	st := h.state(cl)
	h.queued(st)
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
