package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TestPaceHookFindsTheQueue: the hook can read a client's outbound queue
// in this mochi version (if this fails after an upgrade, bursts above
// broker.client_queue are dropped again).
func TestPaceHookFindsTheQueue(t *testing.T) {
	h := newPaceHook(new(auth.AllowHook))
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

// retainedFlood retains n statuses on s, then connects a viewer with o
// that subscribes to them all, and returns how many distinct ones it got.
func retainedFlood(t *testing.T, s *Server, n int, o clientOpts) int {
	t.Helper()
	for i := range n {
		if err := s.Publish(fmt.Sprintf("lab/v1/node/n%04d/status", i), []byte("state"), true); err != nil {
			t.Fatal(err)
		}
	}
	viewer := connect(t, s.Addr(), o)
	go func() { // the SUBACK comes before the flood, the flood while collecting
		sub := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "lab/v1/node/+/status", QoS: 1}}}
		if _, err := viewer.cm.Subscribe(context.Background(), sub); err != nil {
			t.Error(err)
		}
	}()
	return collect(viewer, n, 5*time.Second)
}

// TestRetainedBurstIsPaced: a subscriber of 2,000 retained messages gets
// every one of them through a 16-slot queue (mochi alone dropped all but
// about the first queue's worth).
func TestRetainedBurstIsPaced(t *testing.T) {
	s := startServer(t, Config{ClientQueue: 16})
	if got := retainedFlood(t, s, 2000, clientOpts{id: "viewer"}); got != 2000 {
		t.Fatalf("viewer received %d of 2000 retained messages", got)
	}
}

// TestSmallReceiveMaximum: a subscriber with a Receive Maximum of 16 gets
// all of a 500-message retained flood (mochi sorts every held message at
// each release: O(n²)). Past its Receive Maximum mochi v2.7.9 holds
// messages back and lost the quota of each one it released: the
// subscriber stalled after a few dozen (see also broker/doc.go).
func TestSmallReceiveMaximum(t *testing.T) {
	s := startServer(t, Config{ClientQueue: 1024})
	if got := retainedFlood(t, s, 500, clientOpts{id: "viewer", receiveMax: 16}); got != 500 {
		t.Fatalf("viewer (Receive Maximum 16) received %d of 500 retained messages", got)
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
// reading costs a publisher one paceStall, not one per message, and the
// broker says in its log that it dropped messages for it.
func TestStuckSubscriberDoesNotStallPublishers(t *testing.T) {
	// At INFO: at DEBUG mochi formats every dropped packet, payload and
	// all, into the log, which is what would make publishers slow here.
	logs := new(syncBuffer)
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s := startServer(t, Config{ClientQueue: 16, Logger: logger})
	// A raw MQTT client that subscribes and never reads again. At QoS 0:
	// a QoS 1 delivery to it would block in mochi itself (NextPacketID
	// waits for the client lock, which its writer holds while blocked on
	// the socket) until its keepalive runs out — see broker/doc.go.
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	var buf bytes.Buffer
	connectPk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "stuck"}}
	subscribePk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "lab/v1/node/+/status", Qos: 0}}}
	if err := connectPk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if err := subscribePk.SubscribeEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := s.Mochi().Topics.Subscribers("lab/v1/node/x/status").Subscriptions["stuck"]; !ok {
			return errors.New("stuck not subscribed yet")
		}
		return nil
	})
	pub := connect(t, s.Addr(), clientOpts{id: "n1"})
	publish := func(i int) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := pub.cm.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("lab/v1/node/n%04d/status", i), QoS: 1, Payload: make([]byte, 32<<10)})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Fill the socket buffers until the broker drops for the subscriber.
	i := 0
	for ; atomic.LoadInt64(&s.Mochi().Info.MessagesDropped) == 0; i++ {
		if i == 5000 {
			t.Fatal("5,000 publishes of 32 KiB and nothing dropped for a subscriber that does not read")
		}
		publish(i)
	}
	start := time.Now()
	for range 500 {
		publish(i)
		i++
	}
	if d := time.Since(start); d > 2*paceStall {
		t.Fatalf("500 publishes past a stuck subscriber took %s (more than 2 × paceStall)", d)
	}
	if !strings.Contains(logs.String(), "dropped messages for a client whose queue was full") || !strings.Contains(logs.String(), "client=stuck") {
		t.Error("the broker did not log the messages it dropped for the stuck subscriber")
	}
}

// denyReads refuses every delivery.
type denyReads struct{ auth.AllowHook }

func (*denyReads) OnACLCheck(_ *mqtt.Client, _ string, write bool) bool { return write }

// TestPaceHookAsksTheACLFirst: the pace hook decides with the ACL hook; a
// refused delivery is refused and not counted as on its way to the queue
// (it never arrives there).
func TestPaceHookAsksTheACLFirst(t *testing.T) {
	h := newPaceHook(new(denyReads))
	s := startServer(t, Config{ClientQueue: 32})
	connect(t, s.Addr(), clientOpts{id: "viewer"})
	cl, _ := s.Mochi().Clients.Get("viewer")
	if h.OnACLCheck(cl, "lab/v1/node/n1/status", false) {
		t.Error("a delivery the ACL refuses was allowed")
	}
	if !h.OnACLCheck(cl, "lab/v1/node/viewer/status", true) {
		t.Error("a publish the ACL allows was refused")
	}
	if n := h.state(cl).inTransit.Load(); n != 0 {
		t.Errorf("%d refused deliveries counted in transit", n)
	}
	allow := newPaceHook(new(auth.AllowHook))
	if !allow.OnACLCheck(cl, "lab/v1/node/n1/status", false) {
		t.Error("a delivery the ACL allows was refused")
	}
	if n := allow.state(cl).inTransit.Load(); n != 1 {
		t.Errorf("in transit = %d after one allowed delivery, want 1", n)
	}
}
