// Package bustest connects test clients to a broker: one helper for the
// tests of every package that speaks MQTT through internal/bus (bus's own
// tests cannot import it). It is imported by tests only.
package bustest

import (
	"context"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
)

// Dial connects a client to url as id (a clean start, no credentials
// unless cfg names them), waits until it is connected and subscribes it
// to filters; every message goes to onMessage. It is closed when the test
// ends. Extra settings (Username, Password) come from cfg, whose URLs,
// ClientID and OnMessage are replaced.
func Dial(t testing.TB, url, id string, onMessage func(bus.Message), cfg bus.Config, filters ...string) *bus.Client {
	t.Helper()
	cfg.URLs, cfg.ClientID, cfg.CleanStart, cfg.OnMessage = []string{url}, id, true, onMessage
	c, err := bus.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.AwaitConnection(ctx); err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	if len(filters) > 0 {
		if err := c.Subscribe(ctx, filters...); err != nil {
			t.Fatalf("%s: subscribe %v: %v", id, filters, err)
		}
	}
	return c
}
