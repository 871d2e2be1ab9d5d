package node

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/testbroker"
	"github.com/lab-fleet/lab/node/nixsys/nixsystest"
	"github.com/lab-fleet/lab/proto"
)

// After another client with the node's name took the session over, the
// node says it is online again a moment after it reconnected: the broker
// may publish the thrown-out connection's Last Will ("offline") after the
// node's first "online".
func TestPresenceSaidAgainAfterTakeover(t *testing.T) {
	br := testbroker.Start(t)
	dir := t.TempDir()
	d, err := New(Config{Name: "n1", Broker: []string{br.URL()}, StateDir: filepath.Join(dir, "state"),
		BootIDFile: filepath.Join(dir, "boot_id"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nixsystest.New())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	tp := proto.DefaultTopics
	online := make(chan bool, 100)
	watch, err := bus.Dial(context.Background(), bus.Config{URLs: []string{br.URL()}, ClientID: "watch", CleanStart: true,
		OnMessage: func(m bus.Message) {
			var p proto.Presence
			if proto.Decode(m.Payload, &p) == nil {
				online <- p.Online
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = watch.Close(context.Background()) })
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := watch.AwaitConnection(wctx); err != nil {
		t.Fatal(err)
	}
	if err := watch.Subscribe(wctx, tp.NodePresence("n1")); err != nil {
		t.Fatal(err)
	}
	awaitPresence := func(want bool, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case got := <-online:
				if got == want {
					return
				}
			case <-deadline:
				t.Fatalf("no presence online=%v within %s", want, within)
			}
		}
	}
	awaitPresence(true, 10*time.Second)
	time.Sleep(500 * time.Millisecond) // the retained copy and the live one
	for len(online) > 0 {
		<-online
	}
	// A second "n1" connects (takes the session) and leaves at once.
	twin, err := bus.Dial(context.Background(), bus.Config{URLs: []string{br.URL()}, ClientID: "n1", SessionExpiry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := twin.AwaitConnection(wctx); err != nil {
		t.Fatal(err)
	}
	if err := twin.Close(wctx); err != nil {
		t.Fatal(err)
	}
	awaitPresence(true, 10*time.Second) // n1 back after its backoff
	// The thrown-out connection's will lands late.
	off, err := d.presence(false)
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Publish(wctx, tp.NodePresence("n1"), off, true); err != nil {
		t.Fatal(err)
	}
	awaitPresence(false, 5*time.Second)
	awaitPresence(true, 2*takeoverSettle)
}
