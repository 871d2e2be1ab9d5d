package broker

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/lab-fleet/lab/broker/access"
)

// syncBuffer is a goroutine-safe log sink whose content is printed when the
// test fails (t.Log from mochi's goroutines could outlive the test).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger returns a DEBUG logger whose output is shown if t fails.
func testLogger(t *testing.T) (*slog.Logger, *syncBuffer) {
	t.Helper()
	buf := new(syncBuffer)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker log:\n%s", buf.String())
		}
	})
	h := slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(h), buf
}

// startServer starts a broker on 127.0.0.1:0 and closes it at cleanup.
func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger, _ = testLogger(t)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return s
}

// client is a test MQTT v5 client that records what it receives.
type client struct {
	cm      *autopaho.ConnectionManager
	msgs    chan *paho.Publish
	connack chan *paho.Connack
}

type clientOpts struct {
	id      string
	persist bool   // CleanStart=false with a session expiry
	filter  string // subscribed (QoS 1) on every connection, if set
	// receiveMax is the client's Receive Maximum (0: paho's 65,535).
	receiveMax uint16
}

// connect connects a client to addr and waits for its first connection.
func connect(t *testing.T, addr string, o clientOpts) *client {
	t.Helper()
	u, err := url.Parse("mqtt://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{msgs: make(chan *paho.Publish, 64), connack: make(chan *paho.Connack, 4)}
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     20,
		CleanStartOnInitialConnection: !o.persist,
		ConnectRetryDelay:             50 * time.Millisecond,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, ca *paho.Connack) {
			c.connack <- ca
			if o.filter == "" {
				return
			}
			go func() {
				sub := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: o.filter, QoS: 1}}}
				_, _ = cm.Subscribe(context.Background(), sub) // retried on the next connection
			}()
		},
		ClientConfig: paho.ClientConfig{
			ClientID: o.id,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){
				func(pr paho.PublishReceived) (bool, error) {
					c.msgs <- pr.Packet
					return true, nil
				},
			},
		},
	}
	if o.persist {
		cfg.SessionExpiryInterval = 3600
	}
	if o.receiveMax > 0 {
		cfg.ConnectPacketBuilder = func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			cp.Properties.ReceiveMaximum = &o.receiveMax
			return cp, nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.cm, err = autopaho.NewConnection(context.Background(), cfg)
	if err != nil {
		t.Fatalf("connect %s: %v", o.id, err)
	}
	t.Cleanup(func() { c.disconnect() })
	if err := c.cm.AwaitConnection(ctx); err != nil {
		t.Fatalf("await connection %s: %v", o.id, err)
	}
	return c
}

func (c *client) disconnect() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.cm.Disconnect(ctx)
}

// subscribe subscribes at QoS 1 and waits for the SUBACK.
func (c *client) subscribe(t *testing.T, filter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sub := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}
	if _, err := c.cm.Subscribe(ctx, sub); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
}

// next waits for the next message.
func (c *client) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case pk := <-c.msgs:
		return pk
	case <-time.After(5 * time.Second):
		t.Fatal("timeout waiting for a message")
		return nil
	}
}

// expect waits for the next message and checks its topic and payload.
func (c *client) expect(t *testing.T, topic, payload string) *paho.Publish {
	t.Helper()
	select {
	case pk := <-c.msgs:
		if pk.Topic != topic || string(pk.Payload) != payload {
			t.Fatalf("got %s=%q, want %s=%q", pk.Topic, pk.Payload, topic, payload)
		}
		return pk
	case <-time.After(5 * time.Second):
		t.Fatalf("timeout waiting for %s=%q", topic, payload)
		return nil
	}
}

// checkFor polls fn every `every` until it returns nil or total elapses.
func checkFor(t *testing.T, total, every time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", total, err)
		}
		time.Sleep(every)
	}
}

// tokenIdentities writes an identities file in a new directory with ids,
// each logging in with the token testToken(name), and returns its path.
func tokenIdentities(t *testing.T, ids ...access.Identity) string {
	t.Helper()
	var f access.File
	for _, id := range ids {
		h, err := access.HashToken([]byte(testToken(id.Name)))
		if err != nil {
			t.Fatal(err)
		}
		id.PasswordHash = h
		f.Put(id)
	}
	path := filepath.Join(t.TempDir(), "identities.yaml")
	if err := access.Save(path, f); err != nil {
		t.Fatal(err)
	}
	return path
}

// testToken is the token of identity name in tokenIdentities' files.
func testToken(name string) string { return "token-of-" + name + "-0123456789abcdef" }
