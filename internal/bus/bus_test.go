package bus

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/testbroker"
)

func dial(t *testing.T, url, id string, cfg Config) *Client {
	t.Helper()
	cfg.URLs, cfg.ClientID = []string{url}, id
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRetainedAndWill(t *testing.T) {
	b := testbroker.Start(t)
	got := make(chan Message, 10)
	sub := dial(t, b.URL(), "sub", Config{CleanStart: true, OnMessage: func(m Message) { got <- m }})
	ctx := context.Background()

	// The publisher goes through a link the test can cut for good, so that
	// it cannot reconnect (a reconnect would take its session over).
	link := newLink(t, b.Addr)
	pub := dial(t, "mqtt://"+link.addr(), "pub", Config{Will: &Message{Topic: "x/will", Payload: []byte("gone"), Retain: true}})
	if err := pub.Publish(ctx, "x/retained", []byte("hello"), true); err != nil {
		t.Fatal(err)
	}
	// mochi may acknowledge before it stored the retained copy: wait for
	// it, so that the subscription below gets the retained copy.
	deadline := time.Now().Add(5 * time.Second)
	for len(b.Server.Topics.Messages("x/retained")) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := sub.Subscribe(ctx, "x/#"); err != nil {
		t.Fatal(err)
	}
	m := recv(t, got)
	if m.Topic != "x/retained" || string(m.Payload) != "hello" || !m.Retain {
		t.Fatalf("got %+v", m)
	}
	// Kill the publisher's connection without a DISCONNECT: the broker sends
	// the will. (QoS 1 may deliver x/retained again: at least once.)
	link.cut()
	m = recvTopic(t, got, "x/will")
	if string(m.Payload) != "gone" {
		t.Fatalf("got %+v, want will", m)
	}
}

func TestResubscribeOnReconnect(t *testing.T) {
	b := testbroker.Start(t)
	got := make(chan Message, 10)
	ups := make(chan struct{}, 10)
	link := newLink(t, b.Addr)
	c := dial(t, "mqtt://"+link.addr(), "n1", Config{SessionExpiry: 0, CleanStart: true,
		OnMessage: func(m Message) { got <- m }, OnUp: func(context.Context, *Client) { ups <- struct{}{} }})
	<-ups
	ctx := context.Background()
	if err := c.Subscribe(ctx, "a/b"); err != nil {
		t.Fatal(err)
	}
	// Drop the connection and wait until the broker forgot the session
	// (expiry 0): only a re-subscribe brings messages back.
	link.drop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := b.Server.Clients.Get("n1"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the broker still has the session")
		}
		time.Sleep(10 * time.Millisecond)
	}
	link.restore()
	select {
	case <-ups:
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect")
	}
	if err := b.Server.Publish("a/b", []byte("after"), true, 1); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, got); string(m.Payload) != "after" {
		t.Fatalf("got %+v", m)
	}
}

// The first connection can come up before Dial returns the client: OnUp
// gets the client and may publish with it at once (labd publishes its
// presence there; reading its own copy of the client crashed it in CI).
func TestOnUpCanPublishAtOnce(t *testing.T) {
	b := testbroker.Start(t)
	got := make(chan Message, 100)
	sub := dial(t, b.URL(), "sub", Config{CleanStart: true, OnMessage: func(m Message) { got <- m }})
	if err := sub.Subscribe(context.Background(), "up/#"); err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		id := fmt.Sprintf("c%d", i)
		c, err := Dial(context.Background(), Config{URLs: []string{b.URL()}, ClientID: id, CleanStart: true,
			OnUp: func(ctx context.Context, c *Client) {
				if err := c.Publish(ctx, "up/"+id, []byte(id), false); err != nil {
					t.Errorf("%s: %v", id, err)
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
	}
	seen := map[string]bool{}
	for len(seen) < n {
		seen[recv(t, got).Topic] = true
	}
}

func TestDialRejectsBadURL(t *testing.T) {
	for _, u := range []string{"http://x:1", "mqtt://", "::"} {
		if _, err := Dial(context.Background(), Config{URLs: []string{u}, ClientID: "x"}); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

func recv(t *testing.T, ch <-chan Message) Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("timeout waiting for a message")
		return Message{}
	}
}

// link is a TCP forwarder to the broker that can be cut, after which it
// refuses new connections.
type link struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	down  bool // connections are refused until restore
}

func newLink(t *testing.T, to string) *link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &link{ln: ln}
	t.Cleanup(l.cut)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.mu.Lock()
			down := l.down
			l.mu.Unlock()
			if down {
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			l.mu.Lock()
			l.conns = append(l.conns, c, up)
			l.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return l
}

func (l *link) addr() string { return l.ln.Addr().String() }

// cut closes the link for good.
func (l *link) cut() {
	l.ln.Close()
	l.drop()
}

// drop closes the current connections and refuses new ones until restore.
func (l *link) drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = true
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

func (l *link) restore() {
	l.mu.Lock()
	l.down = false
	l.mu.Unlock()
}

// recvTopic waits for a message on topic, skipping others (duplicates).
func recvTopic(t *testing.T, ch <-chan Message, topic string) Message {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-ch:
			if m.Topic == topic {
				return m
			}
		case <-deadline:
			t.Fatalf("timeout waiting for a message on %s", topic)
			return Message{}
		}
	}
}

// A program stopping (its context cancelled) can still publish a goodbye
// before Close: the connection is not tied to the Dial context.
func TestConnectionOutlivesDialContext(t *testing.T) {
	b := testbroker.Start(t)
	got := make(chan Message, 10)
	sub := dial(t, b.URL(), "sub", Config{CleanStart: true, OnMessage: func(m Message) { got <- m }})
	if err := sub.Subscribe(context.Background(), "x/#"); err != nil {
		t.Fatal(err)
	}
	dctx, stop := context.WithCancel(context.Background())
	c, err := Dial(dctx, Config{URLs: []string{b.URL()}, ClientID: "leaving"})
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.AwaitConnection(actx); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := c.Publish(actx, "x/bye", []byte("offline"), false); err != nil {
		t.Fatalf("publish after the Dial context ended: %v", err)
	}
	if m := recv(t, got); m.Topic != "x/bye" {
		t.Fatalf("got %+v", m)
	}
	if err := c.Close(actx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop the client")
	}
}

func TestTakeoverBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 6: 32 * time.Second, 7: time.Minute, 50: time.Minute} {
		if got := takeoverBackoff(n); got != want {
			t.Errorf("takeoverBackoff(%d) = %s, want %s", n, got, want)
		}
	}
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Two clients with one id (two labd with the same name): each takeover
// is logged, naming the id, and the one thrown out waits longer each
// time instead of taking the session back at once. Once the other is
// gone it comes back (and a normal lost connection is retried at once).
func TestSessionTakeoverBacksOff(t *testing.T) {
	b := testbroker.Start(t)
	var logs syncBuffer
	var mu sync.Mutex
	ups := map[string]int{}
	up := make(chan string, 100)
	mk := func(who string) *Client {
		c, err := Dial(context.Background(), Config{URLs: []string{b.URL()}, ClientID: "twin", SessionExpiry: time.Minute,
			TakeoverHint: "is a second labd running with name twin?", flapWindow: 300 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(&logs, nil)).With("who", who),
			OnUp: func(context.Context, *Client) {
				mu.Lock()
				ups[who]++
				mu.Unlock()
				up <- who
			}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	a := mk("a")
	if w := recvUp(t, up, 5*time.Second); w != "a" {
		t.Fatalf("first up: %s", w)
	}
	second := mk("b")
	time.Sleep(5 * time.Second)
	mu.Lock()
	total := ups["a"] + ups["b"]
	mu.Unlock()
	// Without a backoff the two take the session from each other
	// hundreds of times; with it: at 0 s, 1 s, 2 s, 4 s.
	if total > 7 {
		t.Errorf("%d connections in 5 s: the clients do not back off (%v)", total, ups)
	}
	if a.Takeovers()+second.Takeovers() < 2 {
		t.Errorf("takeovers a %d b %d, want some", a.Takeovers(), second.Takeovers())
	}
	if l := logs.String(); !strings.Contains(l, "another client with the same id connected") || !strings.Contains(l, "client=twin") ||
		!strings.Contains(l, "is a second labd running with name twin?") {
		t.Errorf("the takeover is not logged with the client id and the hint:\n%s", l)
	}
	// The second one goes away: the first is back within its backoff.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := second.Close(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !a.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("the first client did not come back after the second left")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A connection lost for another reason, after it lasted, is retried
	// at once.
	time.Sleep(500 * time.Millisecond)
	for len(up) > 0 {
		<-up
	}
	b.Kick(t, "twin")
	start := time.Now()
	if w := recvUp(t, up, 5*time.Second); w != "a" {
		t.Fatalf("up after the kick: %s", w)
	}
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Errorf("a normal reconnect took %s", took)
	}
}

func recvUp(t *testing.T, ch <-chan string, d time.Duration) string {
	t.Helper()
	select {
	case w := <-ch:
		return w
	case <-time.After(d):
		t.Fatal("timeout waiting for a connection")
		return ""
	}
}

// A connection the broker closes right after it opened (mosquitto 2.0
// closes a taken-over connection without a DISCONNECT) is retried after a
// wait, logged as such; one that lasted is retried at once.
func TestConnectionClosedRightAfterOpeningBacksOff(t *testing.T) {
	b := testbroker.Start(t)
	link := newLink(t, b.Addr)
	var logs syncBuffer
	up := make(chan string, 10)
	dial(t, "mqtt://"+link.addr(), "n1", Config{CleanStart: true, flapWindow: 300 * time.Millisecond, TakeoverHint: "a second n1?",
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		OnUp:   func(context.Context, *Client) { up <- "up" }})
	recvUp(t, up, 5*time.Second)
	link.drop()
	link.restore()
	start := time.Now()
	recvUp(t, up, 5*time.Second)
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("a connection closed right after it opened was retried after %s, want a wait", took)
	}
	if l := logs.String(); !strings.Contains(l, "the broker closed the connection right after it opened") || !strings.Contains(l, "a second n1?") {
		t.Errorf("not logged:\n%s", l)
	}
	time.Sleep(500 * time.Millisecond)
	link.drop()
	link.restore()
	start = time.Now()
	recvUp(t, up, 5*time.Second)
	if took := time.Since(start); took > 700*time.Millisecond {
		t.Errorf("a connection that lasted was retried after %s, want at once", took)
	}
}
