// Package testbroker starts an in-process mochi MQTT broker on a random
// loopback port for tests of packages that may not import broker/ (the
// dependency rule keeps node/ and controller/ independent of it).
package testbroker

import (
	"io"
	"log/slog"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Broker is a running test broker.
type Broker struct {
	*mqtt.Server
	Addr string // host:port
}

// URL returns the mqtt:// URL of the broker.
func (b *Broker) URL() string { return "mqtt://" + b.Addr }

// Start runs an allow-all broker with an inline client until the test ends.
func Start(t testing.TB) *Broker {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// mochi v2.7.9 races (under -race) between Close and a connection
		// its listener accepted just before: a client that gave up
		// reconnecting can leave one. Let such a connection fail first.
		time.Sleep(100 * time.Millisecond)
		_ = srv.Close()
	})
	return &Broker{Server: srv, Addr: tcp.Address()}
}

// Kick drops a client's network connection without a DISCONNECT, as a lost
// link would (the broker then sends the client's Last Will).
func (b *Broker) Kick(t testing.TB, clientID string) {
	t.Helper()
	cl, ok := b.Server.Clients.Get(clientID)
	if !ok {
		t.Fatalf("testbroker: no client %q", clientID)
	}
	cl.Stop(nil)
}
