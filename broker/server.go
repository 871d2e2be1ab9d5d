package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/lab-fleet/lab/broker/access"
	"github.com/lab-fleet/lab/broker/guard"
	"github.com/lab-fleet/lab/internal/pki"
)

// Errors returned by Server methods; check them with errors.Is.
var (
	ErrNotStarted   = errors.New("broker not started")
	ErrStarted      = errors.New("broker already started")
	ErrClosed       = errors.New("broker closed")
	ErrInvalidTopic = errors.New("invalid topic")
	ErrTooLarge     = errors.New("message larger than the maximum packet size")
	// ErrDataDirInUse: New found the store of Config.DataDir locked by
	// another process (a *DataDirInUseError names it).
	ErrDataDirInUse = errors.New("data directory in use")
)

// sysTopicInterval is the $SYS publish period in seconds (mochi: 1). lab
// does not use $SYS; a slower tick saves wakeups on small machines.
const sysTopicInterval = 10

// listenerID names the TCP listener inside mochi.
const listenerID = "tcp"

type state int

const (
	stateNew state = iota
	stateStarted
	stateClosed
)

// Server is the embedded broker. Create it with New, then Start; Close it
// once. Publish, PublishMessage, Subscribe and SubscribeMessages are safe
// for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	mochi  *mqtt.Server
	tcp    *listener
	guard  *guard.Guard // limits before login, on the TCP and TLS listeners
	access *access.Hook // nil without an identities file
	// inline publishes PublishMessage's packets: an inline client of our
	// own (mochi keeps its own unexported), not looked up by its id, which
	// a remote client could share.
	inline *mqtt.Client

	mu    sync.Mutex
	state state
	ops   sync.WaitGroup // Publish/Subscribe calls in progress
	subID atomic.Int64   // inline subscription identifiers
	close sync.Once
}

// New validates cfg, creates the broker and opens its store. Nothing
// listens until Start.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	s.mochi = mqtt.New(&mqtt.Options{
		Capabilities:             cfg.capabilities(),
		ClientNetWriteBufferSize: cfg.ClientBufSize,
		ClientNetReadBufferSize:  cfg.ClientBufSize,
		Logger:                   mochiLogger(cfg.Logger),
		SysTopicResendInterval:   sysTopicInterval,
		InlineClient:             true,
	})
	s.inline = s.mochi.NewClient(nil, mqtt.LocalListener, mqtt.InlineClientId, true)
	s.guard = guard.New(cfg.Guard, nil, cfg.Logger)
	if err := s.addHooks(); err != nil {
		s.guard.Close()
		_ = s.mochi.Close() // stops the hooks added so far
		return nil, err
	}
	return s, nil
}

// Start binds the listener, loads the store and serves in the background.
// Addr is valid once Start returns nil.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateStarted:
		return ErrStarted
	case stateClosed:
		return ErrClosed
	}
	tcp := newListener(listenerID, s.cfg.Listen, nil, s.guard)
	if err := s.mochi.AddListener(tcp); err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Listen, err)
	}
	s.tcp = tcp
	if s.cfg.TLSListen != "" || s.cfg.WSListen != "" {
		tlsCfg, err := pki.ServerConfig(s.cfg.TLSCert, s.cfg.TLSKey, s.cfg.TLSClientCA)
		if err != nil {
			return err
		}
		if s.cfg.TLSListen != "" {
			if err := s.mochi.AddListener(newListener("tls", s.cfg.TLSListen, tlsCfg, s.guard)); err != nil {
				return fmt.Errorf("listen %s: %w", s.cfg.TLSListen, err)
			}
		}
		if s.cfg.WSListen != "" {
			if err := s.mochi.AddListener(newWSListener("wss", s.cfg.WSListen, tlsCfg, s.guard)); err != nil {
				return fmt.Errorf("listen %s: %w", s.cfg.WSListen, err)
			}
		}
	}
	if err := s.mochi.Serve(); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if s.cfg.NoJSONMirror {
		s.clearMirror()
	}
	s.state = stateStarted
	s.log.Info("broker listening", "addr", tcp.Address(), "tls", s.cfg.TLSListen, "wss", s.cfg.WSListen, "data_dir", s.cfg.DataDir)
	return nil
}

// Addr returns the listener's real host:port ("" before Start).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tcp == nil {
		return ""
	}
	return s.tcp.Address()
}

// Close disconnects every client, waits for Publish and Subscribe calls in
// progress, and closes the store. It is safe to call more than once; it must
// not be called from a Subscribe callback.
func (s *Server) Close() error {
	s.close.Do(func() {
		s.mu.Lock()
		s.state = stateClosed
		s.mu.Unlock()
		s.ops.Wait()
		s.guard.Close() // ends failed logins' hold-backs
		// Listeners and their clients first, our way: mochi v2.7.9's
		// Close lists a listener's clients under a read lock that it takes
		// twice (Clients.GetByListener calls Len), so a client leaving at
		// that moment (Delete waiting for the write lock) deadlocks the
		// shutdown for good. CloseAll waits until every client's goroutine
		// ended; mochi's Close then finds nobody left to remove.
		s.mochi.Listeners.CloseAll(s.closeListenerClients)
		_ = s.mochi.Close() // always nil in mochi v2.7.9
		s.log.Info("broker stopped")
	})
	return nil
}

// closeListenerClients disconnects the clients of one listener, reading
// the client list under one read lock (mochi's own helper takes it twice).
func (s *Server) closeListenerClients(listener string) {
	for _, cl := range s.mochi.Clients.GetAll() {
		if cl.Net.Listener == listener && !cl.Closed() {
			_ = s.mochi.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// Mochi returns the underlying mochi server, for hooks added later (auth,
// JSON mirror, metrics). Add hooks before Start.
func (s *Server) Mochi() *mqtt.Server { return s.mochi }

// enter admits a Publish or Subscribe call; leave must follow.
func (s *Server) enter() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateNew:
		return ErrNotStarted
	case stateClosed:
		return ErrClosed
	}
	s.ops.Add(1)
	return nil
}

func (s *Server) leave() { s.ops.Done() }

// Publish publishes through the inline client at QoS 1, retained if asked.
// Subscribers, inline ones included, see it before Publish returns or have
// it queued.
func (s *Server) Publish(topic string, payload []byte, retain bool) error {
	if !mqtt.IsValidFilter(topic, true) || topic == "" {
		return fmt.Errorf("publish %q: %w", topic, ErrInvalidTopic)
	}
	if uint64(len(topic))+uint64(len(payload)) > uint64(s.cfg.MaxPacketSize) {
		return fmt.Errorf("publish %q (%d bytes): %w", topic, len(payload), ErrTooLarge)
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("publish %q: %w", topic, err)
	}
	defer s.leave()
	if err := s.mochi.Publish(topic, payload, retain, 1); err != nil {
		return fmt.Errorf("publish %q: %w", topic, err)
	}
	return nil
}

// ContentType is the Content Type property of PublishMessage's messages.
const ContentType = "application/msgpack"

// Message is one publish with its MQTT v5 request/response properties, as
// PublishMessage sends it and SubscribeMessages hands it over.
type Message struct {
	Topic   string
	Payload []byte
	Retain  bool
	// ResponseTopic and Correlation are the Response Topic and Correlation
	// Data properties: where the publisher wants an answer, and what the
	// answer carries back.
	ResponseTopic string
	Correlation   []byte
	// Username is the publishing client's username ("" for the broker's
	// inline client, and for a client without one), ClientID its client
	// id (mqtt.InlineClientId, "inline", for the inline client). They are
	// set by SubscribeMessages (see there how) and ignored by
	// PublishMessage. With an identities file the username is the
	// identity (the certificate's CN on a TLS listener), which a client
	// cannot claim falsely.
	Username string
	ClientID string
}

// PublishMessage publishes m through the inline client at QoS 1, like
// Publish, with the Content Type ContentType and, when set, m's Response
// Topic and Correlation Data.
func (s *Server) PublishMessage(m Message) error {
	if !mqtt.IsValidFilter(m.Topic, true) || m.Topic == "" {
		return fmt.Errorf("publish %q: %w", m.Topic, ErrInvalidTopic)
	}
	if m.ResponseTopic != "" && !mqtt.IsValidFilter(m.ResponseTopic, true) {
		return fmt.Errorf("publish %q: response topic %q: %w", m.Topic, m.ResponseTopic, ErrInvalidTopic)
	}
	size := uint64(len(m.Topic)) + uint64(len(m.Payload)) + uint64(len(m.ResponseTopic)) + uint64(len(m.Correlation)) + uint64(len(ContentType))
	if size > uint64(s.cfg.MaxPacketSize) {
		return fmt.Errorf("publish %q (%d bytes): %w", m.Topic, len(m.Payload), ErrTooLarge)
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("publish %q: %w", m.Topic, err)
	}
	defer s.leave()
	// As mochi's own Publish does: the inline client's packets are handled
	// as QoS 0 inside the broker (no PUBACK to wait for), the packet id
	// only passes the validity checks; subscribers get QoS 1.
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: m.Retain},
		TopicName:   m.Topic,
		Payload:     m.Payload,
		PacketID:    1,
		Properties: packets.Properties{
			ContentType:     ContentType,
			ResponseTopic:   m.ResponseTopic,
			CorrelationData: m.Correlation,
		},
	}
	if err := s.mochi.InjectPacket(s.inline, pk); err != nil {
		return fmt.Errorf("publish %q: %w", m.Topic, err)
	}
	return nil
}

// SubscribeMessages is Subscribe handing fn the whole Message: its
// properties and who published it. The same rules hold: fn runs on the
// publisher's goroutine, must return quickly, must not call Close, and must
// not modify the message's byte slices.
//
// mochi passes inline handlers its own inline client, never the publisher;
// the publisher is found by the client id mochi records in the packet, when
// fn is called. For a live message that is the publisher itself (fn runs
// while the broker handles its publish). For a retained message delivered
// by SubscribeMessages itself, or a Last Will, the publisher may be gone
// (Username "") or a later client with the same id may be connected (its
// username). The inline client's messages carry mochi's id "inline"; a
// remote client connected with that id (mochi lets it replace the inline
// client in its client list) gets them attributed to its username, never
// its own attributed to the inline client.
func (s *Server) SubscribeMessages(filter string, fn func(Message)) (unsubscribe func(), err error) {
	if fn == nil {
		return nil, fmt.Errorf("subscribe %q: nil callback", filter)
	}
	return s.subscribe(filter, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) { fn(s.message(pk)) })
}

// message is the Message of a packet delivered to an inline subscriber.
func (s *Server) message(pk packets.Packet) Message {
	m := Message{
		Topic: pk.TopicName, Payload: pk.Payload, Retain: pk.FixedHeader.Retain,
		ResponseTopic: pk.Properties.ResponseTopic, Correlation: pk.Properties.CorrelationData,
		ClientID: pk.Origin,
	}
	if cl, ok := s.mochi.Clients.Get(pk.Origin); ok && !cl.Net.Inline {
		m.Username = string(cl.Properties.Username)
	}
	return m
}

// Subscribe calls fn for every message matching filter, retained messages
// first (synchronously, before Subscribe returns). There is no queue: fn
// runs on the publisher's goroutine, so it must return quickly, must not
// call Close, and must not modify payload. retained is the message's retain
// flag as published. The subscription is not persisted; call unsubscribe to
// end it (it is a no-op after Close).
func (s *Server) Subscribe(filter string, fn func(topic string, payload []byte, retained bool)) (unsubscribe func(), err error) {
	if fn == nil {
		return nil, fmt.Errorf("subscribe %q: nil callback", filter)
	}
	return s.subscribe(filter, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		fn(pk.TopicName, pk.Payload, pk.FixedHeader.Retain)
	})
}

func (s *Server) subscribe(filter string, handler mqtt.InlineSubFn) (unsubscribe func(), err error) {
	if !mqtt.IsValidFilter(filter, false) {
		return nil, fmt.Errorf("subscribe %q: %w", filter, ErrInvalidTopic)
	}
	if err := s.enter(); err != nil {
		return nil, fmt.Errorf("subscribe %q: %w", filter, err)
	}
	defer s.leave()
	id := int(s.subID.Add(1))
	if err := s.mochi.Subscribe(filter, id, handler); err != nil {
		return nil, fmt.Errorf("subscribe %q: %w", filter, err)
	}
	var once sync.Once
	return func() { once.Do(func() { s.unsubscribe(filter, id) }) }, nil
}

func (s *Server) unsubscribe(filter string, id int) {
	if s.enter() != nil {
		return
	}
	defer s.leave()
	if err := s.mochi.Unsubscribe(filter, id); err != nil {
		s.log.Warn("inline unsubscribe failed", "filter", filter, "error", err)
	}
}
