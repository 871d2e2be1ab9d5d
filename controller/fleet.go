package controller

import (
	"context"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// Bus is what the controller needs from an MQTT connection. *bus.Client
// implements it; received messages are fed to Fleet.Handle.
type Bus interface {
	Publish(ctx context.Context, topic string, payload []byte, retain bool) error
	Subscribe(ctx context.Context, filters ...string) error
}

// NodeView is everything known about one node.
type NodeView struct {
	Name       string
	Status     *proto.NodeStatus // latest retained status, nil if none
	Online     bool
	Seen       bool   // presence was received
	DesiredGen uint64 // highest gen of its retained desired state seen
	// DesiredLast is the gen of the desired state that arrived last (0:
	// cleared), and DesiredSeen when it arrived: after a reconnect they
	// tell what the broker still holds (Fleet.Reconnects).
	DesiredLast uint64
	DesiredSeen time.Time
	// DesiredRollout is the rollout of the desired state that arrived
	// last ("" when cleared).
	DesiredRollout string
	LastEvent      *proto.Event // latest event
	// LastAck is the latest command acknowledgement (an event naming a
	// command): kept apart, so that events after it do not hide it.
	LastAck *proto.Event
	// Since is when the node's presence last changed (its own clock:
	// the presence message's since), zero before any presence.
	Since time.Time
	// DesiredToplevel is the system of the desired state that arrived
	// last: the one the node should run ("" when cleared or never set).
	DesiredToplevel string
	// LastSeen is the newest time stamp of anything the node sent
	// (status, presence, event), by its own clock.
	LastSeen time.Time
}

// seen moves LastSeen forward to the time stamp ms (Unix ms).
func (v *NodeView) seen(ms int64) {
	if t := time.UnixMilli(ms); ms > 0 && t.After(v.LastSeen) {
		v.LastSeen = t
	}
}

// Started reports whether the node's latest status says it has started
// rollout: it took its Desired and is past waiting for its wave, so it
// finishes (or rolls back) on its own.
func (v NodeView) Started(rollout string) bool {
	return v.Status != nil && v.Status.Execution.Rollout == rollout && v.Status.Execution.State != proto.StateQueued
}

// Fleet is the live view of every node, built from retained messages.
// It is safe for concurrent use; Handle is called from the bus.
type Fleet struct {
	topics proto.Topics
	log    *slog.Logger

	mu       sync.Mutex
	nodes    map[string]*NodeView
	gates    map[string]proto.Gate         // latest retained gate by group
	rollouts map[string]proto.RolloutState // latest retained rollout state by id
	invalid  int
	last     time.Time
	changed  chan struct{}

	watchMu  sync.Mutex
	watchers map[chan struct{}]struct{} // Watch: one coalescing channel per follower

	lost       time.Time // when the connection feeding the view last dropped
	reconnects int       // how many times it came back

	history history // the recent events and rollout changes
}

// NewFleet returns an empty view for a topic layout.
func NewFleet(topics proto.Topics, log *slog.Logger) *Fleet {
	if log == nil {
		log = slog.Default()
	}
	return &Fleet{topics: topics, log: log, nodes: map[string]*NodeView{}, gates: map[string]proto.Gate{}, rollouts: map[string]proto.RolloutState{}, changed: make(chan struct{}, 1)}
}

// Filters are the subscriptions the view needs.
func (f *Fleet) Filters() []string {
	t := f.topics
	return []string{t.AllStatus(), t.AllPresence(), t.AllDesired(), t.AllEvents(), t.AllGates(), t.AllRollouts()}
}

// Subscribe subscribes b to the view's filters.
func (f *Fleet) Subscribe(ctx context.Context, b Bus) error { return b.Subscribe(ctx, f.Filters()...) }

// Handle feeds one received message to the view. Invalid payloads are
// counted and logged, never applied.
func (f *Fleet) Handle(topic string, payload []byte) {
	r, err := f.topics.Parse(topic)
	if err != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = time.Now()
	if r.Kind == proto.TopicRollout {
		var rs proto.RolloutState
		if len(payload) == 0 {
			delete(f.rollouts, r.ID)
		} else if err := proto.Decode(payload, &rs); err != nil || rs.Rollout != r.ID {
			f.invalid++
			f.log.Warn("ignoring invalid rollout state", "topic", topic, "err", err)
			return
		} else {
			old, had := f.rollouts[r.ID]
			f.rollouts[r.ID] = rs
			if !had || old.State != rs.State || old.OpenWave != rs.OpenWave || old.Halted != rs.Halted || old.Reason != rs.Reason {
				f.history.add(Happening{At: time.UnixMilli(rs.TS), Rollout: &RolloutChange{Rollout: rs.Rollout, State: rs.State,
					OpenWave: rs.OpenWave, Waves: len(rs.Waves), Halted: rs.Halted, Reason: rs.Reason, Counters: rs.Counters}})
			}
		}
		f.signal()
		return
	}
	if r.Kind == proto.TopicGate {
		if len(payload) == 0 {
			delete(f.gates, r.Group)
			return
		}
		var g proto.Gate
		if err := proto.Decode(payload, &g); err != nil || g.Group != r.Group {
			f.invalid++
			f.log.Warn("ignoring invalid gate", "topic", topic, "err", err)
			return
		}
		if old, ok := f.gates[r.Group]; !ok || g.Seq >= old.Seq {
			f.gates[r.Group] = g
		}
		f.signal()
		return
	}
	if len(payload) == 0 && (r.Kind == proto.TopicStatus || r.Kind == proto.TopicPresence) {
		// A cleared retained status or presence: the machine is being
		// forgotten. Once both are gone it leaves the view (Snapshot),
		// and every view of the fleet drops it.
		if n, ok := f.nodes[r.Node]; ok {
			if r.Kind == proto.TopicStatus {
				n.Status = nil
			} else {
				n.Seen, n.Online, n.Since = false, false, time.Time{}
			}
			f.signal()
		}
		return
	}
	n := f.node(r.Node)
	switch r.Kind {
	case proto.TopicStatus:
		var s proto.NodeStatus
		if err = proto.Decode(payload, &s); err == nil {
			if n.Status == nil || s.UpdatedAt >= n.Status.UpdatedAt {
				n.Status = &s
			}
			n.seen(s.UpdatedAt)
		}
	case proto.TopicPresence:
		var p proto.Presence
		if err = proto.Decode(payload, &p); err == nil {
			n.Online, n.Seen, n.Since = p.Online, true, time.UnixMilli(p.Since)
			n.seen(p.TS)
		}
	case proto.TopicDesired:
		var d proto.Desired
		if len(payload) == 0 {
			n.DesiredLast, n.DesiredSeen, n.DesiredRollout, n.DesiredToplevel = 0, f.last, "", ""
			return
		}
		if err = proto.Decode(payload, &d); err == nil {
			n.DesiredLast, n.DesiredSeen, n.DesiredRollout, n.DesiredToplevel = d.Gen, f.last, d.Rollout, d.Toplevel
			n.DesiredGen = max(n.DesiredGen, d.Gen)
		}
	case proto.TopicEvents:
		var e proto.Event
		if err = proto.Decode(payload, &e); err == nil {
			n.LastEvent = &e
			if e.Cmd != "" {
				n.LastAck = &e
			}
			n.seen(e.TS)
			f.history.add(Happening{At: time.UnixMilli(e.TS), Event: &e})
		}
	default:
		return
	}
	if err != nil {
		f.invalid++
		f.log.Warn("ignoring invalid message", "topic", topic, "err", err)
		return
	}
	f.signal()
}

func (f *Fleet) signal() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
	f.watchMu.Lock()
	for ch := range f.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	f.watchMu.Unlock()
}

// Watch returns a channel of its own that is signalled (coalesced) after
// every applied message, and the function that ends it. Every follower
// of the view needs its own: Changed wakes only one of them, and a
// controller service follows several rollouts and reboot jobs at once.
func (f *Fleet) Watch() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	f.watchMu.Lock()
	if f.watchers == nil {
		f.watchers = map[chan struct{}]struct{}{}
	}
	f.watchers[ch] = struct{}{}
	f.watchMu.Unlock()
	return ch, func() {
		f.watchMu.Lock()
		delete(f.watchers, ch)
		f.watchMu.Unlock()
	}
}

// Rollout returns the latest retained state of a rollout.
func (f *Fleet) Rollout(id string) (proto.RolloutState, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rs, ok := f.rollouts[id]
	return rs, ok
}

// Rollouts returns the latest retained state of every rollout, by id.
func (f *Fleet) Rollouts() []proto.RolloutState {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]proto.RolloutState, 0, len(f.rollouts))
	for _, rs := range f.rollouts {
		out = append(out, rs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Rollout < out[j].Rollout })
	return out
}

// Gate returns the latest retained gate of a group.
func (f *Fleet) Gate(group string) (proto.Gate, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g, ok := f.gates[group]
	return g, ok
}

func (f *Fleet) node(name string) *NodeView {
	n, ok := f.nodes[name]
	if !ok {
		n = &NodeView{Name: name}
		f.nodes[name] = n
	}
	return n
}

// Changed is signalled (coalesced) after every applied message. It wakes
// one reader: a view followed by several goroutines gives each a Watch.
func (f *Fleet) Changed() <-chan struct{} { return f.changed }

// Invalid is the number of invalid payloads ignored so far.
func (f *Fleet) Invalid() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.invalid
}

// Get returns a copy of one node's view.
func (f *Fleet) Get(name string) (NodeView, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[name]
	if !ok {
		return NodeView{Name: name}, false
	}
	return *n, true
}

// Snapshot returns every node known with a status or presence, by name.
func (f *Fleet) Snapshot() []NodeView {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]NodeView, 0, len(f.nodes))
	for _, n := range f.nodes {
		if n.Status != nil || n.Seen {
			out = append(out, *n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Members returns the nodes whose retained status lists group, by name.
func (f *Fleet) Members(group string) []string {
	var out []string
	for _, n := range f.Snapshot() {
		if n.Status != nil && slices.Contains(n.Status.Groups, group) {
			out = append(out, n.Name)
		}
	}
	return out
}

// LastMessage is when the fleet last handled a message (zero: never).
func (f *Fleet) LastMessage() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// ConnectionLost records that the connection feeding the view dropped
// (bus.Config.OnDown). It does not block.
func (f *Fleet) ConnectionLost() {
	f.mu.Lock()
	f.lost = time.Now()
	f.mu.Unlock()
}

// Reconnected records that the connection is up again with its
// subscriptions (bus.Config.OnUp): the broker is sending every retained
// message again. The first connection is not a reconnect.
func (f *Fleet) Reconnected() {
	f.mu.Lock()
	if !f.lost.IsZero() {
		f.reconnects++
	}
	f.mu.Unlock()
	f.signal()
}

// Reconnects returns how many times the connection came back, and when it
// was last lost: a retained message that arrived after that was sent by
// the broker since (see NodeView.DesiredSeen).
func (f *Fleet) Reconnects() (int, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reconnects, f.lost
}

// Settle waits until retained messages stopped arriving for quiet, or limit
// passed: after a subscribe, the broker sends every retained message at
// once, so a short quiet period means the view is complete.
func (f *Fleet) Settle(ctx context.Context, quiet, limit time.Duration) {
	deadline := time.Now().Add(limit)
	start := time.Now()
	for {
		f.mu.Lock()
		last := f.last
		f.mu.Unlock()
		wait := quiet
		if last.IsZero() {
			// Nothing yet: a busy broker may take a moment before the
			// first retained message; an empty one sends none at all.
			last, wait = start, max(quiet, time.Second)
		}
		now := time.Now()
		if now.Sub(last) >= wait || now.After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}
