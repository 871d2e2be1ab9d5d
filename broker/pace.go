package broker

import (
	"bytes"
	"reflect"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
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
// (the access hook decides) after waiting, when the subscriber's queue is
// half full, until it is three quarters empty. The other half is headroom
// for deliveries that passed the check at the same moment: a burst is
// lossless while fewer than ClientQueue/2 publishers deliver to one
// subscriber in the same instant (512 with the default queue). A subscriber whose queue
// makes no progress for paceStall is considered stuck and no longer waited
// for until its queue drains again, so a dead connection costs each
// publisher one paceStall at most, not one per message.
//
// mochi does not export the queue: its length is read with reflect from
// ClientState's "outbound" channel (len of a channel is safe to read
// concurrently). If a mochi upgrade renames it, newPaceHook returns nil and
// the broker runs without pacing (TestPaceHookFindsTheQueue fails).
type paceHook struct {
	mqtt.HookBase
	field   int // index of ClientState.outbound
	stalled sync.Map
}

const (
	paceStall = time.Second
	paceTick  = time.Millisecond
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
	return bytes.Contains([]byte{mqtt.OnACLCheck, mqtt.OnDisconnect}, []byte{b})
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
	high, low := capacity/2, capacity/4
	if capacity < 4 || n < high {
		if n <= low {
			h.stalled.Delete(cl)
		}
		return false
	}
	if _, stuck := h.stalled.Load(cl); stuck {
		return false
	}
	last, progress := n, time.Now()
	for n > low && !cl.Closed() {
		time.Sleep(paceTick)
		if n, _ = h.queue(cl); n < last {
			last, progress = n, time.Now()
		} else if time.Since(progress) > paceStall {
			h.stalled.Store(cl, true)
			break
		}
	}
	return false
}

func (h *paceHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.stalled.Delete(cl) }
