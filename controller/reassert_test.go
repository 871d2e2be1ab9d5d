package controller

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/clock"
	"github.com/lab-fleet/lab/proto"
)

// recordingBus records what is published, by topic.
type recordingBus struct {
	mu   sync.Mutex
	pubs map[string][]byte
}

func (b *recordingBus) Publish(_ context.Context, topic string, payload []byte, _ bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pubs == nil {
		b.pubs = map[string][]byte{}
	}
	b.pubs[topic] = payload
	return nil
}

func (b *recordingBus) Subscribe(context.Context, ...string) error { return nil }

func sealedDesired(t *testing.T, node string, gen uint64) []byte {
	t.Helper()
	d := &proto.Desired{Node: node, Rollout: "other", Gen: gen, Toplevel: tlA, Action: proto.ActionSwitch}
	d.Stamp("test", time.Now())
	b, err := proto.Seal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFleetReconnects: the first connection is not a reconnect; every
// loss followed by a reconnect is, and says when the loss was.
func TestFleetReconnects(t *testing.T) {
	f := NewFleet(proto.DefaultTopics, nil)
	f.Reconnected()
	if n, lost := f.Reconnects(); n != 0 || !lost.IsZero() {
		t.Fatalf("first connection counted: %d, %v", n, lost)
	}
	before := time.Now()
	f.ConnectionLost()
	f.Reconnected()
	if n, lost := f.Reconnects(); n != 1 || lost.Before(before) {
		t.Fatalf("after one loss: %d reconnects, lost at %v (before %v)", n, lost, before)
	}
	f.ConnectionLost()
	f.Reconnected()
	if n, _ := f.Reconnects(); n != 2 {
		t.Fatalf("after two losses: %d reconnects", n)
	}
}

// TestReassertPublishesWhatTheBrokerLost: after a reconnect, the Desired
// of a target that the broker did not send again, or sent back older,
// goes out again with the same gen, signed; one sent back as it was, one
// cleared and one superseded by a newer rollout are left alone.
func TestReassertPublishesWhatTheBrokerLost(t *testing.T) {
	tp := proto.DefaultTopics
	key, err := proto.GenerateKey("op")
	if err != nil {
		t.Fatal(err)
	}
	f := NewFleet(tp, nil)
	b := &recordingBus{}
	plan := Plan{ID: "r1", Action: proto.ActionSwitch, Targets: map[string]string{}}
	nodes := []string{"kept", "lost", "superseded", "cleared", "older"}
	for _, n := range nodes {
		plan.Targets[n] = tlB
	}
	const gen = 1000
	r := New(b, f, tp, "test").newRun(newRolloutState(plan, [][]string{nodes}, time.Now()), Options{Key: &key, Clock: clock.Real{}})
	for _, n := range nodes {
		r.st.gens[n] = gen
		f.Handle(tp.NodeDesired(n), sealedDesired(t, n, gen)) // our own publish, echoed
	}
	f.ConnectionLost()
	time.Sleep(time.Millisecond)
	f.Reconnected()
	_, lost := f.Reconnects()
	f.Handle(tp.NodeDesired("kept"), sealedDesired(t, "kept", gen))
	f.Handle(tp.NodeDesired("superseded"), sealedDesired(t, "superseded", gen+5))
	f.Handle(tp.NodeDesired("cleared"), nil)
	f.Handle(tp.NodeDesired("older"), sealedDesired(t, "older", gen-5))

	if err := r.reassert(context.Background(), lost); err != nil {
		t.Fatal(err)
	}
	var again []string
	kr, err := proto.NewKeyring(key.Public().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		raw, ok := b.pubs[tp.NodeDesired(n)]
		if !ok {
			continue
		}
		again = append(again, n)
		var d proto.Desired
		if err := proto.Decode(raw, &d); err != nil {
			t.Fatal(err)
		}
		if d.Gen != gen || d.Rollout != "r1" || d.Toplevel != tlB || d.Node != n {
			t.Errorf("%s published again as %+v, want gen %d of r1 to %s", n, d, gen, tlB)
		}
		if err := kr.Verify(&d); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	slices.Sort(again)
	if want := []string{"lost", "older"}; !slices.Equal(again, want) {
		t.Fatalf("published again: %v, want %v", again, want)
	}
	if _, ok := b.pubs[tp.Rollout("r1")]; !ok {
		t.Error("the rollout's state was not published again")
	}
}

// TestReassertOnAFreshConnection: with no loss (labctl rollout resume, on
// a connection of its own), what the broker did not send is published
// again and what it sent is left alone.
func TestReassertOnAFreshConnection(t *testing.T) {
	tp := proto.DefaultTopics
	f := NewFleet(tp, nil)
	b := &recordingBus{}
	plan := Plan{ID: "r1", Action: proto.ActionSwitch, Targets: map[string]string{"held": tlB, "gone": tlB}}
	r := New(b, f, tp, "test").newRun(newRolloutState(plan, [][]string{{"gone", "held"}}, time.Now()), Options{Clock: clock.Real{}})
	r.st.gens["held"], r.st.gens["gone"] = 7, 7
	f.Handle(tp.NodeDesired("held"), sealedDesired(t, "held", 7))
	if err := r.reassert(context.Background(), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.pubs[tp.NodeDesired("held")]; ok {
		t.Error("the Desired the broker holds was published again")
	}
	if _, ok := b.pubs[tp.NodeDesired("gone")]; !ok {
		t.Error("the Desired the broker lost was not published again")
	}
}
