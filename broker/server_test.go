package broker

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/lab-fleet/lab/broker/access"
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

// connectAs connects a test client with a username (and password).
func connectAs(t *testing.T, addr, id, user, password string) *client {
	t.Helper()
	u, err := url.Parse("mqtt://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{msgs: make(chan *paho.Publish, 64), connack: make(chan *paho.Connack, 4)}
	cm, err := autopaho.NewConnection(context.Background(), autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     20,
		CleanStartOnInitialConnection: true,
		ConnectRetryDelay:             50 * time.Millisecond,
		ConnectUsername:               user,
		ConnectPassword:               []byte(password),
		OnConnectionUp:                func(_ *autopaho.ConnectionManager, ca *paho.Connack) { c.connack <- ca },
		ClientConfig: paho.ClientConfig{
			ClientID: id,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				c.msgs <- pr.Packet
				return true, nil
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.cm = cm
	t.Cleanup(c.disconnect)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cm.AwaitConnection(ctx); err != nil {
		t.Fatalf("connect %s as %s: %v", id, user, err)
	}
	return c
}

// messages collects what SubscribeMessages hands over.
type messages chan Message

func (ms messages) fn(m Message) { ms <- m }

func (ms messages) next(t *testing.T) Message {
	t.Helper()
	select {
	case m := <-ms:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("timeout waiting for an inline message")
		return Message{}
	}
}

// A request an MQTT v5 client publishes reaches an inline subscriber with
// its Response Topic, Correlation Data, the publisher's username and
// client id.
func TestSubscribeMessagesSeesPropertiesAndPublisher(t *testing.T) {
	s := startServer(t, Config{})
	got := make(messages, 10)
	unsub, err := s.SubscribeMessages("lab/v1/ctl/req/+", got.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	c := connectAs(t, s.Addr(), "ops-1", "ops", "")
	corr := []byte{0, 1, 0xff}
	if _, err := c.cm.Publish(context.Background(), &paho.Publish{Topic: "lab/v1/ctl/req/submit", QoS: 1, Payload: []byte("req"),
		Properties: &paho.PublishProperties{ResponseTopic: "lab/v1/ctl/res/ops/1", CorrelationData: corr}}); err != nil {
		t.Fatal(err)
	}
	m := got.next(t)
	want := Message{Topic: "lab/v1/ctl/req/submit", Payload: []byte("req"), ResponseTopic: "lab/v1/ctl/res/ops/1", Correlation: corr, Username: "ops", ClientID: "ops-1"}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("inline subscriber got %+v, want %+v", m, want)
	}
	// Without properties, from a client without a username.
	anon := connect(t, s.Addr(), clientOpts{id: "anon"})
	if _, err := anon.cm.Publish(context.Background(), &paho.Publish{Topic: "lab/v1/ctl/req/list", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if m := got.next(t); m.ResponseTopic != "" || m.Correlation != nil || m.Username != "" || m.ClientID != "anon" {
		t.Fatalf("got %+v", m)
	}
}

// PublishMessage reaches an MQTT v5 client with its properties, at QoS 1,
// and an inline subscriber as from the inline client.
func TestPublishMessageToClientAndInline(t *testing.T) {
	s := startServer(t, Config{})
	c := connect(t, s.Addr(), clientOpts{id: "ops-1"})
	c.subscribe(t, "lab/v1/ctl/res/ops/#")
	got := make(messages, 10)
	unsub, err := s.SubscribeMessages("lab/v1/ctl/res/ops/#", got.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	m := Message{Topic: "lab/v1/ctl/res/ops/1", Payload: []byte("answer"), ResponseTopic: "lab/v1/ctl/req/more", Correlation: []byte("c-1")}
	if err := s.PublishMessage(m); err != nil {
		t.Fatal(err)
	}
	pk := c.expect(t, m.Topic, "answer")
	if pk.QoS != 1 || pk.Retain || pk.Properties == nil || pk.Properties.ResponseTopic != m.ResponseTopic ||
		string(pk.Properties.CorrelationData) != "c-1" || pk.Properties.ContentType != ContentType {
		t.Fatalf("client got qos %d retain %v properties %+v", pk.QoS, pk.Retain, pk.Properties)
	}
	in := got.next(t)
	if in.Topic != m.Topic || in.ResponseTopic != m.ResponseTopic || string(in.Correlation) != "c-1" || in.Username != "" || in.ClientID != "inline" {
		t.Fatalf("inline subscriber got %+v", in)
	}
	// Retained, and without a response topic.
	if err := s.PublishMessage(Message{Topic: "lab/v1/ctl/res/ops/2", Payload: []byte("kept"), Retain: true}); err != nil {
		t.Fatal(err)
	}
	if pk := c.expect(t, "lab/v1/ctl/res/ops/2", "kept"); pk.Properties.ResponseTopic != "" || pk.Properties.CorrelationData != nil {
		t.Fatalf("properties %+v", pk.Properties)
	}
	got.next(t)
	late := make(messages, 10)
	unsub2, err := s.SubscribeMessages("lab/v1/ctl/res/ops/2", late.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer unsub2()
	if m := late.next(t); !m.Retain || string(m.Payload) != "kept" {
		t.Fatalf("retained copy: %+v", m)
	}
}

func TestPublishMessageErrors(t *testing.T) {
	logger, _ := testLogger(t)
	s, err := New(Config{Listen: "127.0.0.1:0", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PublishMessage(Message{Topic: "a/b"}); !errors.Is(err, ErrNotStarted) {
		t.Errorf("PublishMessage before Start: %v, want ErrNotStarted", err)
	}
	if _, err := s.SubscribeMessages("a/#", func(Message) {}); !errors.Is(err, ErrNotStarted) {
		t.Errorf("SubscribeMessages before Start: %v, want ErrNotStarted", err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []Message{{Topic: ""}, {Topic: "a/+"}, {Topic: "$SYS/x"}, {Topic: "a/b", ResponseTopic: "r/+"}, {Topic: "a/b", ResponseTopic: "r/#"}} {
		if err := s.PublishMessage(m); !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("PublishMessage(%+v): %v, want ErrInvalidTopic", m, err)
		}
	}
	if err := s.PublishMessage(Message{Topic: "a/b", Correlation: make([]byte, DefaultMaxPacketSize)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize PublishMessage: %v, want ErrTooLarge", err)
	}
	if _, err := s.SubscribeMessages("a/#/b", func(Message) {}); !errors.Is(err, ErrInvalidTopic) {
		t.Errorf("SubscribeMessages(a/#/b): %v, want ErrInvalidTopic", err)
	}
	if _, err := s.SubscribeMessages("a/#", nil); err == nil {
		t.Error("SubscribeMessages with a nil callback accepted")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.PublishMessage(Message{Topic: "a/b"}); !errors.Is(err, ErrClosed) {
		t.Errorf("PublishMessage after Close: %v, want ErrClosed", err)
	}
}

// With an identities file: a controller's request reaches the inline
// subscriber under its identity; a viewer's and a node's are refused (MQTT
// v5 reason 0x87) and never arrive; a controller cannot read another
// controller's answers, and reads its own.
func TestControllerAPIUnderTheAccessRules(t *testing.T) {
	dir := t.TempDir()
	var f access.File
	for _, id := range []access.Identity{
		{Name: "ops", Role: access.RoleController}, {Name: "ci", Role: access.RoleController},
		{Name: "grafana", Role: access.RoleViewer}, {Name: "n1", Role: access.RoleNode, Groups: []string{"web"}},
	} {
		h, err := access.HashPassword([]byte("pw-" + id.Name))
		if err != nil {
			t.Fatal(err)
		}
		id.PasswordHash = h
		f.Put(id)
	}
	path := filepath.Join(dir, "identities.yaml")
	if err := access.Save(path, f); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{Identities: path})
	got := make(messages, 10)
	unsub, err := s.SubscribeMessages("lab/v1/ctl/req/+", got.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	ctx := context.Background()
	as := func(user, id string) *client { return connectAs(t, s.Addr(), id, user, "pw-"+user) }
	request := func(c *client, verb string) (*paho.PublishResponse, error) {
		return c.cm.Publish(ctx, &paho.Publish{Topic: "lab/v1/ctl/req/" + verb, QoS: 1, Payload: []byte(verb),
			Properties: &paho.PublishProperties{ResponseTopic: "lab/v1/ctl/res/x/1", CorrelationData: []byte("1")}})
	}
	ops, ci, viewer, node := as("ops", "ops-1"), as("ci", "ci"), as("grafana", "grafana-1"), as("n1", "n1") // a node's id is its name
	for _, c := range []struct {
		who string
		c   *client
	}{{"grafana", viewer}, {"n1", node}} {
		resp, err := request(c.c, "submit")
		if err == nil || resp == nil || resp.ReasonCode != 0x87 {
			t.Errorf("%s's request: %+v, %v; want refused with 0x87", c.who, resp, err)
		}
	}
	if _, err := request(ops, "list"); err != nil {
		t.Fatal(err)
	}
	// Refused requests never arrive: the first message is the controller's.
	if m := got.next(t); string(m.Payload) != "list" || m.Username != "ops" || m.ClientID != "ops-1" || m.ResponseTopic != "lab/v1/ctl/res/x/1" {
		t.Fatalf("inline subscriber got %+v, want ops's list request", m)
	}
	subscribe := func(c *client, filter string) byte {
		ack, err := c.cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
		if ack == nil || len(ack.Reasons) != 1 {
			t.Fatalf("subscribe %s: %+v, %v", filter, ack, err)
		}
		return ack.Reasons[0]
	}
	for _, c := range []struct {
		who    string
		c      *client
		filter string
	}{{"ci", ci, "lab/v1/ctl/res/ops/#"}, {"ci", ci, "lab/v1/ctl/res/+/#"}, {"ci", ci, "lab/v1/#"}, {"grafana", viewer, "lab/v1/ctl/req/+"}, {"grafana", viewer, "lab/v1/ctl/res/grafana/#"}, {"n1", node, "lab/v1/ctl/res/n1/#"}} {
		if code := subscribe(c.c, c.filter); code < 0x80 {
			t.Errorf("%s may subscribe to %s (reason 0x%02x)", c.who, c.filter, code)
		}
	}
	if code := subscribe(ops, "lab/v1/ctl/res/ops/#"); code >= 0x80 {
		t.Fatalf("ops may not read its own answers: reason 0x%02x", code)
	}
	if err := s.PublishMessage(Message{Topic: "lab/v1/ctl/res/ops/1", Payload: []byte("answer"), Correlation: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if pk := ops.expect(t, "lab/v1/ctl/res/ops/1", "answer"); string(pk.Properties.CorrelationData) != "1" {
		t.Fatalf("answer without its correlation: %+v", pk.Properties)
	}
}
