package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

const twoDays = 2 * 24 * 60 * 60 // seconds, beyond mochi's 24 h default

// backdateRetained moves a retained message's creation time into the past,
// as if it had been retained for that long.
func backdateRetained(t *testing.T, s *Server, topic string, secs int64) {
	t.Helper()
	pk, ok := s.Mochi().Topics.Retained.Get(topic)
	if !ok {
		t.Fatalf("no retained message on %s", topic)
	}
	pk.Created -= secs
	s.Mochi().Topics.Retained.Add(topic, pk)
}

// awaitSweeps waits until mochi's once-a-second expiry sweep has run at
// least twice after now, detected through a message that expires in 1 s.
func awaitSweeps(t *testing.T, s *Server, c *client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	one := uint32(1)
	pub := &paho.Publish{Topic: "sweep/marker", QoS: 1, Retain: true, Payload: []byte("m"),
		Properties: &paho.PublishProperties{MessageExpiry: &one}}
	if _, err := c.cm.Publish(ctx, pub); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		if _, ok := s.Mochi().Topics.Retained.Get("sweep/marker"); ok {
			return errors.New("marker with a 1 s expiry still retained")
		}
		return nil
	})
	time.Sleep(1100 * time.Millisecond) // one more sweep
}

func TestCapabilities(t *testing.T) {
	var c Config
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	caps := c.capabilities()
	if caps.MaximumMessageExpiryInterval != 0 {
		t.Errorf("MaximumMessageExpiryInterval = %d, want 0 (never force expiry)", caps.MaximumMessageExpiryInterval)
	}
	if caps.MaximumSessionExpiryInterval != 7*24*3600 || caps.MaximumPacketSize != DefaultMaxPacketSize ||
		caps.MaximumClientWritesPending != 1024 || caps.MaximumQos != 1 {
		t.Errorf("capabilities = %+v", caps)
	}
}

// TestRetainedNeverExpires: retained messages and queued QoS 1 messages
// without a publisher-set expiry outlive mochi's 24 h default, while a
// publisher's Message Expiry Interval is honoured. Time is simulated by
// backdating the messages; mochi's real sweep does the deleting.
func TestRetainedNeverExpires(t *testing.T) {
	t.Parallel()
	s := startServer(t, Config{DataDir: t.TempDir()})
	pub := connect(t, s.Addr(), clientOpts{id: "pub"})
	node := connect(t, s.Addr(), clientOpts{id: "sleepy", persist: true})
	node.subscribe(t, "lab/v1/node/sleepy/cmd")
	node.disconnect()

	if err := s.Publish("lab/v1/node/n1/desired", []byte("inline"), true); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v5 := &paho.Publish{Topic: "lab/v1/node/n2/status", QoS: 1, Retain: true, Payload: []byte("v5")}
	if _, err := pub.cm.Publish(ctx, v5); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		cl, ok := s.Mochi().Clients.Get("sleepy")
		if !ok || !cl.Closed() {
			return errors.New("sleepy still connected")
		}
		return nil
	})
	if err := s.Publish("lab/v1/node/sleepy/cmd", []byte("queued"), false); err != nil {
		t.Fatal(err)
	}

	for _, topic := range []string{"lab/v1/node/n1/desired", "lab/v1/node/n2/status"} {
		pk, ok := s.Mochi().Topics.Retained.Get(topic)
		if !ok || pk.Expiry != 0 {
			t.Fatalf("retained %s: present %v, Expiry %d; want present with Expiry 0", topic, ok, pk.Expiry)
		}
		backdateRetained(t, s, topic, twoDays)
	}
	sleepy, _ := s.Mochi().Clients.Get("sleepy")
	queued := sleepy.State.Inflight.GetAll(false)
	if len(queued) != 1 {
		t.Fatalf("queued for sleepy: %d messages, want 1", len(queued))
	}
	for _, pk := range queued {
		if pk.Expiry != 0 {
			t.Fatalf("queued message Expiry = %d, want 0", pk.Expiry)
		}
		pk.Created -= twoDays
		sleepy.State.Inflight.Set(pk)
	}

	awaitSweeps(t, s, pub)

	for _, topic := range []string{"lab/v1/node/n1/desired", "lab/v1/node/n2/status"} {
		if _, ok := s.Mochi().Topics.Retained.Get(topic); !ok {
			t.Errorf("retained %s expired", topic)
		}
	}
	if n := sleepy.State.Inflight.Len(); n != 1 {
		t.Errorf("queued message expired (inflight %d, want 1)", n)
	}
}

// TestDefaultExpiryWouldDelete is the control for TestRetainedNeverExpires:
// with mochi's default MaximumMessageExpiryInterval the same backdated
// message is deleted, so the test above would catch a regression.
func TestDefaultExpiryWouldDelete(t *testing.T) {
	t.Parallel()
	logger, _ := testLogger(t)
	s, err := New(Config{Listen: "127.0.0.1:0", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	s.Mochi().Options.Capabilities.MaximumMessageExpiryInterval = 24 * 60 * 60 // mochi's default
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	pub := connect(t, s.Addr(), clientOpts{id: "pub"})
	if err := s.Publish("lab/v1/node/n1/desired", []byte("inline"), true); err != nil {
		t.Fatal(err)
	}
	backdateRetained(t, s, "lab/v1/node/n1/desired", twoDays)
	awaitSweeps(t, s, pub)
	if _, ok := s.Mochi().Topics.Retained.Get("lab/v1/node/n1/desired"); ok {
		t.Fatal("with mochi's default the backdated retained message survived; the expiry test proves nothing")
	}
}
