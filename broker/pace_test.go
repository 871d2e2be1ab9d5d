package broker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// TestPaceHookFindsTheQueue: the hook can read a client's outbound queue
// in this mochi version (if this fails after an upgrade, bursts above
// broker.client_queue are dropped again).
func TestPaceHookFindsTheQueue(t *testing.T) {
	h := newPaceHook()
	if h == nil {
		t.Fatal("newPaceHook: mochi's ClientState has no outbound channel")
	}
	s := startServer(t, Config{ClientQueue: 32})
	connect(t, s.Addr(), clientOpts{id: "viewer"})
	cl, ok := s.Mochi().Clients.Get("viewer")
	if !ok {
		t.Fatal("viewer not connected")
	}
	if n, c := h.queue(cl); c != 32 || n < 0 {
		t.Fatalf("queue = %d/%d, want capacity 32", n, c)
	}
}

// collect counts the distinct topics c receives until it has want of them
// or nothing comes for quiet.
func collect(c *client, want int, quiet time.Duration) int {
	seen := map[string]bool{}
	for len(seen) < want {
		select {
		case pk := <-c.msgs:
			seen[pk.Topic] = true
		case <-time.After(quiet):
			return len(seen)
		}
	}
	return len(seen)
}

// TestRetainedBurstIsPaced: a subscriber of 2,000 retained messages gets
// every one of them through a 16-slot queue (mochi alone dropped all but
// about the first queue's worth).
func TestRetainedBurstIsPaced(t *testing.T) {
	s := startServer(t, Config{ClientQueue: 16})
	const n = 2000
	for i := range n {
		if err := s.Publish(fmt.Sprintf("lab/v1/node/n%04d/status", i), []byte("state"), true); err != nil {
			t.Fatal(err)
		}
	}
	viewer := connect(t, s.Addr(), clientOpts{id: "viewer"})
	go func() { // the SUBACK comes before the burst, the burst while collecting
		sub := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "lab/v1/node/+/status", QoS: 1}}}
		if _, err := viewer.cm.Subscribe(context.Background(), sub); err != nil {
			t.Error(err)
		}
	}()
	if got := collect(viewer, n, 5*time.Second); got != n {
		t.Fatalf("viewer received %d of %d retained messages", got, n)
	}
}

// TestLiveBurstIsPaced: 2,000 messages published at once by 20 clients
// all reach one subscriber through a 64-slot queue (32 slots of headroom
// for 20 concurrent publishers).
func TestLiveBurstIsPaced(t *testing.T) {
	s := startServer(t, Config{ClientQueue: 64})
	viewer := connect(t, s.Addr(), clientOpts{id: "viewer"})
	viewer.subscribe(t, "lab/v1/node/+/status")
	const publishers, each = 20, 100
	var wg sync.WaitGroup
	for p := range publishers {
		pub := connect(t, s.Addr(), clientOpts{id: fmt.Sprintf("n%02d", p)})
		wg.Add(1)
		go func() { // every message of this publisher in flight at once
			defer wg.Done()
			var inFlight sync.WaitGroup
			for i := range each {
				inFlight.Add(1)
				go func() {
					defer inFlight.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_, err := pub.cm.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("lab/v1/node/n%02d-%03d/status", p, i), QoS: 1, Payload: []byte("s")})
					if err != nil {
						t.Error(err)
					}
				}()
			}
			inFlight.Wait()
		}()
	}
	if got := collect(viewer, publishers*each, 5*time.Second); got != publishers*each {
		t.Fatalf("viewer received %d of %d live messages", got, publishers*each)
	}
	wg.Wait()
}

// TestStuckSubscriberDoesNotStallPublishers: a subscriber that stops
// reading costs a publisher one paceStall, not one per message.
func TestStuckSubscriberDoesNotStallPublishers(t *testing.T) {
	s := startServer(t, Config{ClientQueue: 16})
	stuck := connect(t, s.Addr(), clientOpts{id: "stuck"})
	stuck.subscribe(t, "lab/v1/node/+/status")
	// stuck.msgs (64) fills, then paho stops reading: the broker's queue
	// for it fills and stays full.
	pub := connect(t, s.Addr(), clientOpts{id: "n1"})
	start := time.Now()
	for i := range 400 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := pub.cm.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("lab/v1/node/n%03d/status", i), QoS: 1, Payload: make([]byte, 4096)})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 3*paceStall {
		t.Fatalf("400 publishes past a stuck subscriber took %s (more than 3 × paceStall)", d)
	}
}
