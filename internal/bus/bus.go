package bus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
)

// ContentType is set on every publish.
const ContentType = "application/msgpack"

// Message is one publish, sent or received.
type Message struct {
	Topic   string
	Payload []byte
	Retain  bool
	// ResponseTopic and Correlation are the MQTT v5 request/response
	// properties (Response Topic, Correlation Data): where the publisher
	// wants the answer, and what the answer must carry back. Publish
	// sends neither, nor does Config.Will; PublishMessage sends them when
	// set.
	ResponseTopic string
	Correlation   []byte
}

// Config describes a connection.
type Config struct {
	URLs     []string // mqtt://host:port, tls://host:port, ws://, wss://
	ClientID string
	Username string
	Password []byte
	// PasswordFunc, when set, gives the password before every connection
	// attempt instead of Password (labd re-reads its password_file, so a
	// fixed file is picked up without a restart). Its error fails the
	// attempt.
	PasswordFunc  func() ([]byte, error)
	TLS           *tls.Config
	CleanStart    bool          // clean start on the first connect (never on reconnects)
	SessionExpiry time.Duration // how long the broker keeps the session after a disconnect
	KeepAlive     time.Duration // default 30s
	Will          *Message      // Last Will, published by the broker if the connection is lost
	// Dial, when set, opens the TCP connections of mqtt:// URLs (the
	// benchmark counts bytes on the wire with it). Other schemes refuse it.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// OnMessage receives every publish, in order, on the client's goroutine.
	OnMessage func(Message)
	// OnUp runs after every (re)connect, once the remembered subscriptions
	// were sent again. It runs on its own goroutine and may block. It gets
	// the client, since the first connection can come up before Dial
	// returns it.
	OnUp func(ctx context.Context, c *Client)
	// OnDown runs when a connection is lost. It must not block.
	OnDown func()
	// TakeoverHint is added to the warning logged when another client
	// with the same id took the session over, e.g. "is a second labd
	// running with name n1?".
	TakeoverHint string
	// FailFast is for commands a person waits on: before the first
	// connection, once every URL failed in a way retrying cannot fix (a
	// ConnectError that is Final, or Graced and lasting connectGrace),
	// the client stops trying and AwaitConnection returns the
	// *ConnectError. Failed attempts are then logged at debug level only:
	// the error says it. Daemons leave it off and keep trying.
	FailFast bool
	// ConnectHint, when set, adds advice to the warning logged for a
	// failed connection attempt (e.g. which config key to check).
	ConnectHint func(*ConnectError) string

	Logger *slog.Logger

	flapWindow time.Duration // tests: default flapWindow
}

// After the broker took the session over (MQTT v5 DISCONNECT with reason
// 0x8E: another client connected with the same client id), the client
// waits before it reconnects — 1 s, doubling up to a minute while the
// takeovers go on — instead of taking the session back at once: two
// processes with one id would otherwise throw each other out without end.
// A connection lost within flapWindow of opening counts the same, with
// waits up to flapBackoffMax: mosquitto 2.0 closes a taken-over
// connection without a DISCONNECT. Any other lost connection is retried
// at once.
const (
	reasonSessionTakenOver = 0x8E
	takeoverBackoffMin     = time.Second
	takeoverBackoffMax     = time.Minute
	flapWindow             = 5 * time.Second
	flapBackoffMax         = 15 * time.Second
	// takeoverStable is how long a connection must last to end a run of
	// takeovers (longer than the other client's longest wait).
	takeoverStable = 2 * takeoverBackoffMax
)

// takeoverBackoff is the wait after the n-th takeover in a row (n ≥ 1).
func takeoverBackoff(n int) time.Duration {
	d := takeoverBackoffMin
	for i := 1; i < n && d < takeoverBackoffMax; i++ {
		d *= 2
	}
	return min(d, takeoverBackoffMax)
}

// Client is a self-healing MQTT v5 connection.
type Client struct {
	cfg    Config
	cm     *autopaho.ConnectionManager
	log    *slog.Logger
	cancel context.CancelFunc
	ready  chan struct{} // closed once cm is set: callbacks wait for it

	mu      sync.Mutex
	filters []string
	up      bool
	upSince time.Time
	// takenOver: the broker said the current connection's session was
	// taken over; streak counts takeovers in a row, takeovers all of
	// them; delay is the wait before the next reconnect.
	takenOver bool
	streak    int
	takeovers int
	delay     time.Duration

	// Connection attempts: everUp once a connection came up; attempt
	// numbers the failures since the last connection (autopaho tries the
	// URLs in turn and reports each failure once, so failure n was on
	// URL n mod len); failing is the current run of failures, trouble
	// the run that preceded the current connection.
	everUp   bool
	attempt  int
	failing  Trouble
	trouble  Trouble
	byURL    map[string]*urlFailures
	logged   string    // the last failure logged at warn level, in words
	loggedAt time.Time // and when
	gaveUp   chan struct{}
	fatal    error
}

// Trouble is a run of failed connection attempts.
type Trouble struct {
	Attempts    int
	First, Last time.Time
	Err         *ConnectError // the last failure
}

// urlFailures is the run of failures on one URL before the first
// connection (FailFast).
type urlFailures struct {
	first time.Time
	last  *ConnectError
}

// session is paho's in-memory session state, watched for the broker's
// DISCONNECT: paho reports it here before the connection counts as lost,
// so that onDown knows the reason.
type session struct {
	*state.State
	lost func(*packets.Disconnect)
}

func (s session) ConnectionLost(dp *packets.Disconnect) error {
	s.lost(dp)
	return s.State.ConnectionLost(dp)
}

// ErrNotConnected is returned by Publish and Subscribe while the connection is down.
var ErrNotConnected = autopaho.ConnectionDownError

// ErrNoSubscribers is wrapped by PublishMessage's error when the broker
// accepted the message but said nobody subscribes to its topic (MQTT v5
// PUBACK reason 0x10), e.g. a request nobody serves. A broker may say so
// but need not: mosquitto does, mochi (the embedded broker, v2.7.9) never
// does, so a nil error does not prove anyone received the message.
var ErrNoSubscribers = errors.New("no matching subscribers")

// ErrNotAuthorized is wrapped by Publish's and PublishMessage's error when
// the broker refused the message: this identity may not publish there
// (MQTT v5 PUBACK reason 0x87).
var ErrNotAuthorized = errors.New("not authorized")

// reasonNotAuthorized is the MQTT v5 PUBACK reason 0x87.
const reasonNotAuthorized = 0x87

// reasonNoMatchingSubscribers is the MQTT v5 PUBACK reason 0x10.
const reasonNoMatchingSubscribers = 0x10

// ParseURL reads a broker URL: mqtt:// (or tcp://), tls:// (ssl://,
// mqtts://), ws:// or wss://, with a host.
func ParseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("broker url %q: %w", s, err)
	}
	switch u.Scheme {
	case "mqtt", "tcp", "tls", "ssl", "mqtts", "ws", "wss":
	default:
		return nil, fmt.Errorf("broker url %q: scheme must be mqtt, tls, ws or wss", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("broker url %q has no host", s)
	}
	return u, nil
}

// Dial validates cfg and starts connecting in the background. It does not
// wait for the connection: see AwaitConnection. The connection lives until
// Close, not until ctx ends, so that a program being stopped can still say
// goodbye (publish its offline presence, then disconnect) after its own
// context is cancelled.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("bus: no broker URL")
	}
	if cfg.ClientID == "" {
		return nil, errors.New("bus: empty client id")
	}
	urls := make([]*url.URL, 0, len(cfg.URLs))
	for _, s := range cfg.URLs {
		u, err := ParseURL(s)
		if err != nil {
			return nil, fmt.Errorf("bus: %w", err)
		}
		urls = append(urls, u)
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.flapWindow == 0 {
		cfg.flapWindow = flapWindow
	}
	c := &Client{cfg: cfg, log: cfg.Logger.With("client", cfg.ClientID), ready: make(chan struct{}), gaveUp: make(chan struct{})}
	ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))

	ac := autopaho.ClientConfig{
		ServerUrls:                    urls,
		TlsCfg:                        cfg.TLS,
		KeepAlive:                     uint16(cfg.KeepAlive / time.Second),
		CleanStartOnInitialConnection: cfg.CleanStart,
		SessionExpiryInterval:         uint32(cfg.SessionExpiry / time.Second),
		ReconnectBackoff:              c.backoff(autopaho.NewExponentialBackoff(200*time.Millisecond, 30*time.Second, time.Second, 2)),
		ConnectTimeout:                10 * time.Second,
		ConnectUsername:               cfg.Username,
		ConnectPassword:               cfg.Password,
		OnConnectionUp:                c.onUp,
		OnConnectionDown:              c.onDown,
		OnConnectError:                c.connectFailed,
		ClientConfig: paho.ClientConfig{
			ClientID:          cfg.ClientID,
			Session:           session{State: state.NewInMemory(), lost: c.sessionLost},
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){c.onPublish},
			OnClientError:     func(err error) { c.log.Warn("mqtt client error", "err", err) },
		},
	}
	if pf := cfg.PasswordFunc; pf != nil {
		ac.ConnectPacketBuilder = func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			pw, err := pf()
			if err != nil {
				return nil, err
			}
			cp.Password, cp.PasswordFlag = pw, len(pw) > 0
			return cp, nil
		}
	}
	if cfg.Dial != nil {
		ac.AttemptConnection = func(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
			if u.Scheme != "mqtt" && u.Scheme != "tcp" {
				return nil, fmt.Errorf("bus: a custom dialer serves mqtt:// only, not %s", u.Scheme)
			}
			return cfg.Dial(ctx, "tcp", u.Host)
		}
	}
	if w := cfg.Will; w != nil {
		ac.WillMessage = &paho.WillMessage{Topic: w.Topic, Payload: w.Payload, Retain: w.Retain, QoS: 1}
		ac.WillProperties = &paho.WillProperties{ContentType: ContentType}
	}
	cm, err := autopaho.NewConnection(ctx, ac)
	if err != nil {
		c.cancel()
		return nil, fmt.Errorf("bus: connect: %w", err)
	}
	c.cm = cm
	close(c.ready)
	return c, nil
}

// failFastBackoffMax bounds the wait between the first attempts of a
// FailFast client, so that its verdict comes soon after the grace.
const failFastBackoffMax = 750 * time.Millisecond

// backoff is the wait before connection attempt n of one reconnect: the
// first waits only after a takeover, later ones as next says.
func (c *Client) backoff(next autopaho.Backoff) func(int) time.Duration {
	return func(attempt int) time.Duration {
		if attempt > 0 {
			c.mu.Lock()
			hurry := c.cfg.FailFast && !c.everUp
			c.mu.Unlock()
			if hurry { // a person waits: decide within the grace
				return min(next(attempt), failFastBackoffMax)
			}
			return next(attempt)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		d := c.delay
		c.delay = 0
		return d
	}
}

// connectFailed classifies a failed attempt, logs it in words (a new
// failure at once, the same one again once a minute) and, for a FailFast
// client that never connected, gives up once retrying cannot help.
func (c *Client) connectFailed(err error) {
	now := time.Now()
	c.mu.Lock()
	url := c.cfg.URLs[c.attempt%len(c.cfg.URLs)]
	c.attempt++
	ce := classify(url, err)
	if c.failing.Attempts == 0 {
		c.failing.First = now
	}
	c.failing.Attempts++
	c.failing.Last, c.failing.Err = now, ce
	words := ce.Error()
	quiet := c.cfg.FailFast && !c.everUp
	repeat := words == c.logged && now.Sub(c.loggedAt) < time.Minute
	if !quiet && !repeat {
		c.logged, c.loggedAt = words, now
	}
	attempts := c.failing.Attempts
	var giveUp error
	if c.cfg.FailFast && !c.everUp {
		giveUp = c.verdictLocked(ce, now)
	}
	c.mu.Unlock()

	hint := ""
	if c.cfg.ConnectHint != nil {
		hint = c.cfg.ConnectHint(ce)
	}
	switch {
	case quiet:
		c.log.Debug("mqtt connect failed", "url", url, "err", ce.Words(), "detail", err)
	case !repeat:
		c.log.Warn("cannot connect to the broker", "url", url, "err", ce.Words(), "fix", hint, "attempts", attempts)
	}
	if giveUp != nil {
		c.mu.Lock()
		first := c.fatal == nil
		if first {
			c.fatal = giveUp
		}
		c.mu.Unlock()
		if first {
			close(c.gaveUp)
			c.cancel() // no more attempts
		}
	}
}

// verdictLocked records ce and returns the error to give up with once
// every URL has failed for good, else nil.
func (c *Client) verdictLocked(ce *ConnectError, now time.Time) error {
	if c.byURL == nil {
		c.byURL = map[string]*urlFailures{}
	}
	f := c.byURL[ce.URL]
	if f == nil || f.last.Kind != ce.Kind {
		f = &urlFailures{first: now}
		c.byURL[ce.URL] = f
	}
	f.last = ce
	var errs []error
	for _, u := range c.cfg.URLs {
		f := c.byURL[u]
		if f == nil || !(f.last.Final() || f.last.Graced() && now.Sub(f.first) >= connectGrace) {
			return nil
		}
		errs = append(errs, f.last)
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// LastTrouble is the run of failed attempts that preceded the current
// connection (zero when it came up at the first try, or before any
// connection).
func (c *Client) LastTrouble() Trouble {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.trouble
}

func (c *Client) sessionLost(dp *packets.Disconnect) {
	if dp != nil && dp.ReasonCode == reasonSessionTakenOver {
		c.mu.Lock()
		c.takenOver = true
		c.mu.Unlock()
	}
}

// Takeovers is how many times another client with the same id took this
// client's session over, or the broker closed a connection within
// seconds of opening it (which is how mosquitto 2.0 takes a session over).
func (c *Client) Takeovers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.takeovers
}

func (c *Client) onUp(cm *autopaho.ConnectionManager, _ *paho.Connack) {
	c.mu.Lock()
	c.up = true
	c.upSince = time.Now()
	c.takenOver = false
	c.everUp = true
	c.attempt = 0
	c.trouble, c.failing = c.failing, Trouble{}
	c.logged = ""
	filters := slices.Clone(c.filters)
	trouble := c.trouble
	c.mu.Unlock()
	if trouble.Attempts > 0 && !c.cfg.FailFast {
		c.log.Info("connected to the broker after failed attempts", "attempts", trouble.Attempts,
			"failing_for", trouble.Last.Sub(trouble.First).Round(time.Second), "last_err", trouble.Err.Words())
	}
	c.log.Debug("mqtt connected")
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// The first connection can come up before Dial has set c.cm.
		select {
		case <-c.ready:
		case <-ctx.Done():
			return
		}
		if len(filters) > 0 {
			if err := c.subscribe(ctx, filters); err != nil {
				c.log.Warn("mqtt resubscribe failed", "err", err)
			}
		}
		if c.cfg.OnUp != nil {
			c.cfg.OnUp(ctx, c)
		}
	}()
}

func (c *Client) onDown() bool {
	c.mu.Lock()
	c.up = false
	lasted := time.Since(c.upSince)
	if lasted >= takeoverStable {
		c.streak = 0
	}
	takenOver, flapped := c.takenOver, lasted < c.cfg.flapWindow
	c.takenOver = false
	wait, streak := time.Duration(0), 0
	if takenOver || flapped {
		c.streak++
		c.takeovers++
		wait, streak = takeoverBackoff(c.streak), c.streak
		if !takenOver {
			wait = min(wait, flapBackoffMax)
		}
		c.delay = wait
	}
	c.mu.Unlock()
	switch {
	case takenOver:
		c.log.Warn("another client with the same id connected: the broker took the session over (MQTT reason 0x8E)",
			"hint", c.cfg.TakeoverHint, "reconnect_in", wait, "in_a_row", streak)
	case flapped:
		c.log.Warn("the broker closed the connection right after it opened: another client with the same id connected, or the broker refuses this client",
			"hint", c.cfg.TakeoverHint, "lasted", lasted.Round(time.Millisecond), "reconnect_in", wait, "in_a_row", streak)
	default:
		c.log.Warn("mqtt connection lost")
	}
	if c.cfg.OnDown != nil {
		c.cfg.OnDown()
	}
	return true
}

func (c *Client) onPublish(pr paho.PublishReceived) (bool, error) {
	if c.cfg.OnMessage != nil {
		p := pr.Packet
		m := Message{Topic: p.Topic, Payload: p.Payload, Retain: p.Retain}
		if p.Properties != nil {
			m.ResponseTopic, m.Correlation = p.Properties.ResponseTopic, p.Properties.CorrelationData
		}
		c.cfg.OnMessage(m)
	}
	return true, nil
}

// AwaitConnection blocks until the client is connected or ctx ends. A
// FailFast client that gave up returns its *ConnectError(s) at once. When
// ctx ends first, the error says what the last attempt ran into.
func (c *Client) AwaitConnection(ctx context.Context) error {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.gaveUp:
			cancel()
		case <-actx.Done():
		}
	}()
	err := c.cm.AwaitConnection(actx)
	if err == nil {
		return nil
	}
	c.mu.Lock()
	fatal, last := c.fatal, c.failing.Err
	c.mu.Unlock()
	switch {
	case fatal != nil:
		return fmt.Errorf("bus: %w", fatal)
	case last != nil && ctx.Err() != nil:
		return fmt.Errorf("bus: no connection yet (%w); the last attempt: %w", ctx.Err(), last)
	}
	return fmt.Errorf("bus: await connection: %w", err)
}

// Connected reports whether the connection is up now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.up
}

// Subscribe subscribes to filters at QoS 1 and remembers them, so they are
// sent again on every reconnect. Retained messages arrive on every
// subscribe, which is what reconciliation relies on. If the connection is
// down the filters are remembered and ErrNotConnected is returned.
func (c *Client) Subscribe(ctx context.Context, filters ...string) error {
	c.mu.Lock()
	for _, f := range filters {
		if !slices.Contains(c.filters, f) {
			c.filters = append(c.filters, f)
		}
	}
	c.mu.Unlock()
	return c.subscribe(ctx, filters)
}

// Unsubscribe ends the subscriptions to filters (they are no longer sent
// on reconnects). Messages the broker sent before it are still delivered.
func (c *Client) Unsubscribe(ctx context.Context, filters ...string) error {
	c.mu.Lock()
	c.filters = slices.DeleteFunc(c.filters, func(f string) bool { return slices.Contains(filters, f) })
	c.mu.Unlock()
	if _, err := c.cm.Unsubscribe(ctx, &paho.Unsubscribe{Topics: filters}); err != nil {
		return fmt.Errorf("bus: unsubscribe %v: %w", filters, err)
	}
	return nil
}

func (c *Client) subscribe(ctx context.Context, filters []string) error {
	opts := make([]paho.SubscribeOptions, len(filters))
	for i, f := range filters {
		opts[i] = paho.SubscribeOptions{Topic: f, QoS: 1}
	}
	ack, err := c.cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: opts})
	if err != nil && ack != nil {
		// paho reports a refused filter as one error; name it and the
		// broker's reason code.
		for i, code := range ack.Reasons {
			if code >= 0x80 {
				return fmt.Errorf("bus: subscribe %s refused: reason 0x%02x: %w", filters[min(i, len(filters)-1)], code, err)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("bus: subscribe %v: %w", filters, err)
	}
	for i, code := range ack.Reasons {
		if code >= 0x80 {
			return fmt.Errorf("bus: subscribe %s refused: reason 0x%02x", filters[min(i, len(filters)-1)], code)
		}
	}
	return nil
}

// Publish sends one QoS 1 message and waits for the broker's PUBACK.
// A broker saying that nobody subscribes (reason 0x10) is no error here:
// retained state is read later.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte, retain bool) error {
	_, err := c.publish(ctx, Message{Topic: topic, Payload: payload, Retain: retain})
	return err
}

// PublishMessage is Publish with m's request/response properties
// (Response Topic and Correlation Data, when set). When the broker says
// nobody subscribes to m.Topic (MQTT v5 reason 0x10), the error wraps
// ErrNoSubscribers: a requester can tell at once that nobody serves the
// request, where a broker reports it (see ErrNoSubscribers).
func (c *Client) PublishMessage(ctx context.Context, m Message) error {
	code, err := c.publish(ctx, m)
	if err == nil && code == reasonNoMatchingSubscribers {
		return fmt.Errorf("bus: publish %s: %w (MQTT reason 0x%02x)", m.Topic, ErrNoSubscribers, code)
	}
	return err
}

// publish sends m at QoS 1 and returns the reason code of the broker's
// PUBACK; codes from 0x80 up are errors.
func (c *Client) publish(ctx context.Context, m Message) (byte, error) {
	resp, err := c.cm.Publish(ctx, &paho.Publish{
		QoS: 1, Retain: m.Retain, Topic: m.Topic, Payload: m.Payload,
		Properties: &paho.PublishProperties{ContentType: ContentType, ResponseTopic: m.ResponseTopic, CorrelationData: m.Correlation},
	})
	if resp != nil && resp.ReasonCode >= 0x80 {
		// paho returns an error with the response: the reason code is
		// what callers act on.
		if resp.ReasonCode == reasonNotAuthorized {
			return resp.ReasonCode, fmt.Errorf("bus: publish %s refused: %w (MQTT reason 0x%02x)", m.Topic, ErrNotAuthorized, resp.ReasonCode)
		}
		return resp.ReasonCode, fmt.Errorf("bus: publish %s refused: reason 0x%02x", m.Topic, resp.ReasonCode)
	}
	if err != nil {
		return 0, fmt.Errorf("bus: publish %s: %w", m.Topic, err)
	}
	if resp == nil {
		return 0, nil
	}
	return resp.ReasonCode, nil
}

// Close disconnects cleanly (the broker does not send the Last Will) and
// stops reconnecting.
func (c *Client) Close(ctx context.Context) error {
	err := c.cm.Disconnect(ctx)
	c.cancel()
	// Return only once the manager stopped: no connection attempt is still
	// in flight (one could otherwise reach a broker that is shutting down).
	select {
	case <-c.cm.Done():
	case <-ctx.Done():
	}
	if err != nil && !errors.Is(err, autopaho.ConnectionDownError) {
		return fmt.Errorf("bus: disconnect: %w", err)
	}
	return nil
}

// Done is closed when the client has shut down.
func (c *Client) Done() <-chan struct{} { return c.cm.Done() }
