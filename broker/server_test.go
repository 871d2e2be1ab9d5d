package broker

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

type inlineMsg struct {
	topic, payload string
	retained       bool
}

// recorder collects what an inline subscription receives.
type recorder struct {
	mu   sync.Mutex
	msgs []inlineMsg
}

func (r *recorder) fn(topic string, payload []byte, retained bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, inlineMsg{topic, string(payload), retained})
}

func (r *recorder) snapshot() []inlineMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]inlineMsg(nil), r.msgs...)
}

func TestStartAddrAndInlinePublishToClient(t *testing.T) {
	s := startServer(t, Config{})
	addr := s.Addr()
	if addr == "" || strings.HasSuffix(addr, ":0") {
		t.Fatalf("Addr() = %q, want a bound port", addr)
	}
	c := connect(t, addr, clientOpts{id: "sub1"})
	c.subscribe(t, "lab/v1/node/+/desired")
	if err := s.Publish("lab/v1/node/n1/desired", []byte("gen1"), false); err != nil {
		t.Fatal(err)
	}
	pk := c.expect(t, "lab/v1/node/n1/desired", "gen1")
	if pk.QoS != 1 {
		t.Errorf("QoS = %d, want 1", pk.QoS)
	}
}

func TestInlineSubscribe(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.Publish("lab/v1/node/n1/status", []byte("old"), true); err != nil {
		t.Fatal(err)
	}
	var rec recorder
	unsub, err := s.Subscribe("lab/v1/node/+/status", rec.fn)
	if err != nil {
		t.Fatal(err)
	}
	// The retained message is delivered synchronously by Subscribe.
	want := []inlineMsg{{"lab/v1/node/n1/status", "old", true}}
	if got := rec.snapshot(); len(got) != 1 || got[0] != want[0] {
		t.Fatalf("after Subscribe got %+v, want %+v", got, want)
	}

	c := connect(t, s.Addr(), clientOpts{id: "n2"})
	pub := &paho.Publish{Topic: "lab/v1/node/n2/status", QoS: 1, Payload: []byte("up")}
	if _, err := c.cm.Publish(context.Background(), pub); err != nil {
		t.Fatal(err)
	}
	want = append(want, inlineMsg{"lab/v1/node/n2/status", "up", false})
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := rec.snapshot(); len(got) != 2 || got[1] != want[1] {
			return errors.New("live message not received")
		}
		return nil
	})

	unsub()
	unsub() // idempotent
	if err := s.Publish("lab/v1/node/n3/status", []byte("x"), false); err != nil {
		t.Fatal(err)
	}
	if got := rec.snapshot(); len(got) != 2 {
		t.Fatalf("received %+v after unsubscribe", got[2:])
	}
}

func TestLifecycleErrors(t *testing.T) {
	logger, _ := testLogger(t)
	s, err := New(Config{Listen: "127.0.0.1:0", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != "" {
		t.Errorf("Addr before Start = %q", s.Addr())
	}
	if err := s.Publish("a/b", nil, false); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Publish before Start: %v, want ErrNotStarted", err)
	}
	if _, err := s.Subscribe("a/#", func(string, []byte, bool) {}); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Subscribe before Start: %v, want ErrNotStarted", err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start: %v, want ErrStarted", err)
	}
	for _, topic := range []string{"", "a/+/b", "a/#", "$SYS/x"} {
		if err := s.Publish(topic, nil, false); !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("Publish(%q): %v, want ErrInvalidTopic", topic, err)
		}
	}
	if _, err := s.Subscribe("a/#/b", func(string, []byte, bool) {}); !errors.Is(err, ErrInvalidTopic) {
		t.Errorf("Subscribe(a/#/b): %v, want ErrInvalidTopic", err)
	}
	big := make([]byte, DefaultMaxPacketSize)
	if err := s.Publish("a/b", big, false); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize Publish: %v, want ErrTooLarge", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Publish("a/b", nil, false); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if err := s.Start(); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v, want ErrClosed", err)
	}
}

func TestCloseBeforeStart(t *testing.T) {
	logger, _ := testLogger(t)
	s, err := New(Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestListenError(t *testing.T) {
	s := startServer(t, Config{})
	logger, _ := testLogger(t)
	s2, err := New(Config{Listen: s.Addr(), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	err = s2.Start()
	if err == nil || !strings.Contains(err.Error(), "listen "+s.Addr()) {
		t.Fatalf("Start on a busy port: %v, want a listen error naming the address", err)
	}
}
