package homeassistant

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/proto"
)

// fakeFleet is a fleet view the test sets.
type fakeFleet struct {
	mu    sync.Mutex
	views []controller.NodeView
	ch    chan struct{}
}

func newFakeFleet(views ...controller.NodeView) *fakeFleet {
	return &fakeFleet{views: views, ch: make(chan struct{}, 1)}
}

func (f *fakeFleet) Snapshot() []controller.NodeView {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.views)
}

func (f *fakeFleet) Watch() (<-chan struct{}, func()) { return f.ch, func() {} }

func (f *fakeFleet) set(views ...controller.NodeView) {
	f.mu.Lock()
	f.views = views
	f.mu.Unlock()
	select {
	case f.ch <- struct{}{}:
	default:
	}
}

type published struct {
	topic   string
	payload string
	retain  bool
}

// fakeBus records publishes; fail makes the next ones fail.
type fakeBus struct {
	mu   sync.Mutex
	got  []published
	fail bool
}

func (b *fakeBus) Publish(_ context.Context, topic string, payload []byte, retain bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail {
		return errors.New("connection lost")
	}
	b.got = append(b.got, published{topic, string(payload), retain})
	return nil
}

func (b *fakeBus) setFail(v bool) { b.mu.Lock(); b.fail = v; b.mu.Unlock() }

// take returns what was published since the last take.
func (b *fakeBus) take() []published {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.got
	b.got = nil
	return out
}

// await waits until n publishes arrived since the last take, and a little
// longer to catch more than n.
func (b *fakeBus) await(t *testing.T, n int) []published {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		have := len(b.got)
		b.mu.Unlock()
		if have >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	got := b.take()
	if len(got) != n {
		t.Fatalf("%d publishes, want %d: %v", len(got), n, got)
	}
	return got
}

func startPublisher(t *testing.T, f Fleet, b Bus, before ...func(*Publisher)) *Publisher {
	t.Helper()
	p, err := New(Config{Fleet: f, Bus: b, Topics: proto.DefaultTopics, Interval: 10 * time.Millisecond, Retry: 50 * time.Millisecond,
		SweepAfter: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range before {
		fn(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

func topicsOf(ps []published) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.topic)
	}
	return out
}

func TestPublisherLifecycle(t *testing.T) {
	f := newFakeFleet(view("n1", true, proto.Execution{State: proto.StateSucceeded}, ""))
	b := &fakeBus{}
	p := startPublisher(t, f, b)

	// At start: four configs and the state, retained.
	first := b.await(t, 5)
	want := []string{"homeassistant/update/lab_n1_system/config", "homeassistant/binary_sensor/lab_n1_online/config",
		"homeassistant/binary_sensor/lab_n1_problem/config", "homeassistant/sensor/lab_n1_last_switch/config", "lab/v1/ha/n1/state"}
	if !slices.Equal(topicsOf(first), want) {
		t.Fatalf("published %v, want %v", topicsOf(first), want)
	}
	for _, m := range first {
		if !m.retain || m.payload == "" {
			t.Errorf("%s: retain %v, payload %q", m.topic, m.retain, m.payload)
		}
	}

	// A change that leaves everything as it was publishes nothing.
	f.set(view("n1", true, proto.Execution{State: proto.StateSucceeded}, ""))
	b.await(t, 0)

	// Going offline changes the state only.
	f.set(view("n1", false, proto.Execution{State: proto.StateSucceeded}, ""))
	got := b.await(t, 1)
	if got[0].topic != "lab/v1/ha/n1/state" || !strings.Contains(got[0].payload, `"online":"OFF"`) {
		t.Errorf("offline: %v", got)
	}

	// Home Assistant's will changes nothing; its birth republishes all.
	p.HandleBirth(DefaultBirthTopic, []byte("offline"))
	p.HandleBirth("elsewhere/status", []byte("online"))
	b.await(t, 0)
	p.HandleBirth(DefaultBirthTopic, []byte("online"))
	if got := b.await(t, 5); !slices.Equal(topicsOf(got), want) {
		t.Errorf("after birth: %v", topicsOf(got))
	}

	// A second machine comes; then the first leaves: its configs are
	// emptied first, then its state, all retained.
	n2 := view("n2", true, proto.Execution{}, "")
	f.set(view("n1", false, proto.Execution{State: proto.StateSucceeded}, ""), n2)
	if got := b.await(t, 5); got[4].topic != "lab/v1/ha/n2/state" {
		t.Errorf("n2: %v", topicsOf(got))
	}
	f.set(n2)
	gone := b.await(t, 5)
	if !slices.Equal(topicsOf(gone), want) {
		t.Errorf("removal: %v, want %v", topicsOf(gone), want)
	}
	for _, m := range gone {
		if !m.retain || m.payload != "" {
			t.Errorf("removal %s: retain %v, payload %q", m.topic, m.retain, m.payload)
		}
	}

	// Coming back announces it anew.
	f.set(view("n1", true, proto.Execution{State: proto.StateSucceeded}, ""), n2)
	b.await(t, 5)
}

func TestPublisherRetriesFailedPublishes(t *testing.T) {
	f := newFakeFleet(view("n1", true, proto.Execution{}, ""))
	b := &fakeBus{fail: true}
	startPublisher(t, f, b)
	time.Sleep(30 * time.Millisecond)
	b.setFail(false)
	// Retried without any change of the view.
	if got := b.await(t, 5); got[0].topic != "homeassistant/update/lab_n1_system/config" {
		t.Errorf("retry: %v", topicsOf(got))
	}

	// A removal that fails is retried too.
	b.setFail(true)
	f.set()
	time.Sleep(30 * time.Millisecond)
	b.setFail(false)
	for _, m := range b.await(t, 5) {
		if m.payload != "" {
			t.Errorf("removal retry %s: %q", m.topic, m.payload)
		}
	}
}

// Machines an earlier run announced, which are not in the view, are
// removed after SweepAfter; those in the view stay; an empty view sweeps
// nothing.
func TestPublisherSweepsWhatAnEarlierRunLeft(t *testing.T) {
	earlier := func(p *Publisher) {
		if p.RetainedFilter() != "lab/v1/ha/+/state" {
			t.Errorf("retained filter %q", p.RetainedFilter())
		}
		p.HandleRetained("lab/v1/ha/n1/state", []byte(`{"online":"ON"}`))
		p.HandleRetained("lab/v1/ha/old/state", []byte(`{"online":"OFF"}`))
		p.HandleRetained("lab/v1/ha/cleared/state", []byte(`{"online":"OFF"}`))
		p.HandleRetained("lab/v1/ha/cleared/state", nil)
		p.HandleRetained("lab/v1/ha/Bad_Name/state", []byte(`{}`))
		p.HandleRetained("lab/v1/node/x/status", []byte(`{}`))
	}
	f := newFakeFleet(view("n1", true, proto.Execution{}, ""))
	b := &fakeBus{}
	startPublisher(t, f, b, earlier)
	b.await(t, 5) // n1
	gone := b.await(t, 5)
	want := []string{"homeassistant/update/lab_old_system/config", "homeassistant/binary_sensor/lab_old_online/config",
		"homeassistant/binary_sensor/lab_old_problem/config", "homeassistant/sensor/lab_old_last_switch/config", "lab/v1/ha/old/state"}
	if !slices.Equal(topicsOf(gone), want) {
		t.Errorf("swept %v, want %v", topicsOf(gone), want)
	}
	for _, m := range gone {
		if m.payload != "" || !m.retain {
			t.Errorf("%s: %q retain %v", m.topic, m.payload, m.retain)
		}
	}

	empty := &fakeBus{}
	startPublisher(t, newFakeFleet(), empty, earlier)
	time.Sleep(300 * time.Millisecond)
	if got := empty.take(); len(got) != 0 {
		t.Errorf("an empty view swept %v", topicsOf(got))
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Fleet: newFakeFleet(), Bus: &fakeBus{}, Topics: proto.DefaultTopics}
	if _, err := New(ok); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"home/#", "/ha", "ha/", "$SYS", "a//b", "a+b"} {
		c := ok
		c.Prefix = bad
		if _, err := New(c); !errors.Is(err, ErrPrefix) {
			t.Errorf("prefix %q: %v", bad, err)
		}
	}
	if _, err := New(Config{Topics: proto.DefaultTopics}); err == nil {
		t.Error("no fleet, no bus: accepted")
	}
}
