package broker

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// dialPaho connects a plain (not auto-reconnecting) paho client.
func dialPaho(t *testing.T, addr, id string) (*paho.Client, *paho.Connack) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, ca
}

// TestMaxPacketSize: the limit is advertised in CONNACK, an oversize
// PUBLISH disconnects its sender, and the broker keeps serving others.
func TestMaxPacketSize(t *testing.T) {
	const limit = 4096
	s := startServer(t, Config{MaxPacketSize: limit})

	other := connect(t, s.Addr(), clientOpts{id: "other"})
	other.subscribe(t, "big/#")

	big, ca := dialPaho(t, s.Addr(), "big")
	if ca.Properties == nil || ca.Properties.MaximumPacketSize == nil || *ca.Properties.MaximumPacketSize != limit {
		t.Fatalf("CONNACK Maximum Packet Size = %v, want %d", ca.Properties, limit)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fits := &paho.Publish{Topic: "big/ok", QoS: 1, Payload: make([]byte, limit-100)}
	if _, err := big.Publish(ctx, fits); err != nil {
		t.Fatalf("publish under the limit: %v", err)
	}
	other.expect(t, "big/ok", string(fits.Payload))

	tooBig := &paho.Publish{Topic: "big/no", QoS: 1, Payload: make([]byte, 2*limit)}
	go func() { _, _ = big.Publish(ctx, tooBig) }() // no PUBACK comes
	select {
	case <-big.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client not disconnected after an oversize publish")
	}

	if err := s.Publish("big/after", []byte("still serving"), false); err != nil {
		t.Fatal(err)
	}
	other.expect(t, "big/after", "still serving")
	select {
	case pk := <-other.msgs:
		t.Fatalf("oversize message was delivered: %s (%d bytes)", pk.Topic, len(pk.Payload))
	default:
	}
	if err := s.Publish("big/inline", make([]byte, limit), false); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize inline Publish: %v, want ErrTooLarge", err)
	}
}

func TestQoS2Downgraded(t *testing.T) {
	s := startServer(t, Config{})
	_, ca := dialPaho(t, s.Addr(), "q2")
	if ca.Properties == nil || ca.Properties.MaximumQoS == nil || *ca.Properties.MaximumQoS != 1 {
		t.Fatalf("CONNACK Maximum QoS = %+v, want 1", ca.Properties)
	}
}

// TestClientMemoryLimits: the per-client queue and buffers mochi allocates
// for each connection come from Config.
func TestClientMemoryLimits(t *testing.T) {
	s := startServer(t, Config{ClientQueue: 32, ClientBufSize: 512})
	connect(t, s.Addr(), clientOpts{id: "small"})
	o := s.Mochi().Options
	if o.Capabilities.MaximumClientWritesPending != 32 || o.ClientNetReadBufferSize != 512 || o.ClientNetWriteBufferSize != 512 {
		t.Fatalf("queue %d, read buf %d, write buf %d; want 32, 512, 512", o.Capabilities.MaximumClientWritesPending,
			o.ClientNetReadBufferSize, o.ClientNetWriteBufferSize)
	}
}
