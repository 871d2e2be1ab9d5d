package access

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/lab-fleet/lab/proto"
)

// Hook is the mochi auth and ACL hook over an identities file. It reloads
// the file when it changes (polled) or when Reload is called (SIGHUP); a
// file that no longer validates is reported and the previous table kept.
type Hook struct {
	mqtt.HookBase
	path   string
	topics proto.Topics
	log    *slog.Logger
	table  atomic.Pointer[Table]

	limiter Limiter // nil: no limits

	// accepted holds the clients OnConnect let in, until mochi asks
	// OnConnectAuthenticate (right after, on the same goroutine).
	accepted sync.Map // *mqtt.Client → struct{}

	mu    sync.Mutex
	mtime time.Time
	stop  chan struct{}
	done  sync.WaitGroup
}

// PollInterval is how often the identities file is checked for changes.
var PollInterval = 2 * time.Second

// NewHook loads the identities file; an invalid file is an error.
func NewHook(path string, topics proto.Topics, log *slog.Logger) (*Hook, error) {
	if log == nil {
		log = slog.Default()
	}
	h := &Hook{path: path, topics: topics, log: log, stop: make(chan struct{})}
	if err := h.Reload(); err != nil {
		return nil, err
	}
	return h, nil
}

// Limiter is told about each password login, and may refuse one before
// its password is checked (broker/guard implements it). slow says whether
// the identity's password is expensive to check (a bcrypt hash).
type Limiter interface {
	// LoginBanned: refuse without checking the password.
	LoginBanned(remote, user string, slow bool) bool
	// LoginFailed records a failure and says how long to hold the refusal.
	LoginFailed(remote, user string, slow bool) time.Duration
	// Pause waits that long (or less, when the broker closes).
	Pause(d time.Duration)
}

// SetLimiter installs l; call it before the broker starts.
func (h *Hook) SetLimiter(l Limiter) { h.limiter = l }

// ID names the hook.
func (h *Hook) ID() string { return "lab-access" }

// Provides says which hook methods are implemented.
func (h *Hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

// Init starts watching the file.
func (h *Hook) Init(any) error {
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		t := time.NewTicker(PollInterval)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
				if h.changed() {
					_ = h.Reload()
				}
			}
		}
	}()
	return nil
}

// Stop stops watching.
func (h *Hook) Stop() error {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	h.done.Wait()
	return nil
}

func (h *Hook) changed() bool {
	st, err := os.Stat(h.path)
	if err != nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return !st.ModTime().Equal(h.mtime)
}

// Reload reads the identities file again.
func (h *Hook) Reload() error {
	st, statErr := os.Stat(h.path)
	t, err := Load(h.path, h.topics)
	if err != nil {
		if h.table.Load() != nil {
			h.log.Error("identities file not reloaded: keeping the previous one", "path", h.path, "err", err)
		}
		if statErr == nil {
			h.mu.Lock()
			h.mtime = st.ModTime() // do not report the same broken file every poll
			h.mu.Unlock()
		}
		return err
	}
	h.table.Store(t)
	if statErr == nil {
		h.mu.Lock()
		h.mtime = st.ModTime()
		h.mu.Unlock()
	}
	h.log.Info("identities loaded", "path", h.path, "identities", len(t.byName))
	return nil
}

// OnConnect decides the login. It runs just before OnConnectAuthenticate,
// which can only say yes or no — and mochi answers every no with 0x86 "Bad
// User Name or Password", which sends a person with a wrong client id
// hunting for a password problem. So a refusal is answered here, with the
// CONNACK reason that says what is wrong (0x86 bad username or password,
// 0x8A banned, 0x85 client identifier not valid, 0x87 not authorized for
// a Last Will topic; their MQTT 3 equivalents), and ends the connection.
func (h *Hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if code := h.decide(cl, pk); code != packets.CodeSuccess {
		connack(cl, code)
		return code
	}
	h.accepted.Store(cl, struct{}{})
	return nil
}

// OnConnectAuthenticate lets in what OnConnect accepted.
func (h *Hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	_, ok := h.accepted.LoadAndDelete(cl)
	return ok
}

// decide accepts a client whose username and password (or verified
// certificate) match an identity, whose client id belongs to no other
// identity, and whose Last Will, if any, goes to a topic it may publish
// to; each refusal is logged (refuse).
func (h *Hook) decide(cl *mqtt.Client, pk packets.Packet) packets.Code {
	t := h.table.Load()
	user := string(pk.Connect.Username)
	var id Identity
	var ok bool
	if cn, hasCert := certIdentity(cl); hasCert {
		// A verified client certificate: its common name is the identity
		// (a username, if given, must agree), no password needed.
		id, ok = t.Lookup(cn)
		ok = ok && (user == "" || user == cn)
		user = cn
		cl.Properties.Username = []byte(cn) // the ACL checks go by username
	} else {
		slow := t.Slow(user)
		if h.limiter != nil && h.limiter.LoginBanned(cl.Net.Remote, user, slow) {
			h.refuse(cl, user, ReasonBanned)
			return packets.ErrBanned
		}
		if id, ok = t.Authenticate(user, pk.Connect.Password); !ok {
			h.refuse(cl, user, ReasonBadPassword)
			if h.limiter != nil {
				h.limiter.Pause(h.limiter.LoginFailed(cl.Net.Remote, user, slow))
			}
			return packets.ErrBadUsernameOrPassword
		}
	}
	switch {
	case !ok:
		h.refuse(cl, user, ReasonBadCertificate)
		return packets.ErrBadUsernameOrPassword
	case !t.ClientIDAllowed(id, cl.ID):
		h.refuse(cl, user, ReasonClientID)
		return packets.Code{Code: packets.ErrClientIdentifierNotValid.Code, Reason: "client id belongs to another identity (a node connects as its name)"}
	case pk.Connect.WillFlag && !t.CanPublish(id, pk.Connect.WillTopic):
		h.refuse(cl, user, ReasonWillTopic, "topic", pk.Connect.WillTopic)
		return packets.Code{Code: packets.ErrNotAuthorized.Code, Reason: "last will on a topic this identity may not publish to"}
	}
	return packets.CodeSuccess
}

// connack answers a refused CONNECT (as mochi's SendConnack does for a
// failure, with MQTT 3's return codes for an MQTT 3 client).
func connack(cl *mqtt.Client, code packets.Code) {
	if cl.Properties.ProtocolVersion < 5 {
		switch code.Code {
		case packets.ErrClientIdentifierNotValid.Code:
			code = packets.Err3ClientIdentifierNotValid
		case packets.ErrBadUsernameOrPassword.Code:
			code = packets.ErrMalformedUsernameOrPassword // 0x04 in MQTT 3
		default:
			code = packets.Err3NotAuthorized
		}
	}
	_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: code.Code,
		Properties: packets.Properties{ReasonString: code.Reason}})
}

// Reasons a login is refused, as the "login refused" log line gives them.
const (
	ReasonBadPassword    = "bad username or password"
	ReasonBanned         = "banned after repeated failed logins"
	ReasonBadCertificate = "the client certificate names no identity, or another than the username"
	ReasonClientID       = "client id belongs to another identity (a node must use its name)"
	ReasonWillTopic      = "last will on a topic the user may not publish to"
)

// refuse logs a refused login: one WARN line, the same message every time
// ("login refused"), with the reason, the identity and the address on its
// own (addr) for fail2ban and its kind (docs/security.md).
func (h *Hook) refuse(cl *mqtt.Client, user, reason string, extra ...any) {
	addr := cl.Net.Remote
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	h.log.Warn("login refused", append([]any{"reason", reason, "username", user, "client", cl.ID, "addr", addr, "remote", cl.Net.Remote}, extra...)...)
}

// OnACLCheck applies the rules to a publish (write) or to a subscription
// filter or delivered topic (read). Inline clients (the broker itself)
// are trusted.
func (h *Hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	t := h.table.Load()
	id, ok := t.Lookup(string(cl.Properties.Username))
	if !ok || !t.ClientIDAllowed(id, cl.ID) {
		return false // removed from the file since it connected
	}
	if write {
		return t.CanPublish(id, topic)
	}
	return t.CanSubscribe(id, topic)
}

// certIdentity returns the common name of the client's verified TLS
// certificate, if it presented one.
func certIdentity(cl *mqtt.Client) (string, bool) {
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return "", false
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return "", false
	}
	return st.PeerCertificates[0].Subject.CommonName, true
}

// ErrLogin is a refused password login outside MQTT (Login).
var ErrLogin = errors.New("wrong username or password")

// ErrLoginBanned is a login refused by the limits on failed logins.
var ErrLoginBanned = errors.New("too many failed logins: try again later")

// Login checks a username and password as a CONNECT's, under the same
// limits on failed logins (the dashboard's login; remote is "ip:port").
// It returns the identity.
func (h *Hook) Login(remote, user string, password []byte) (Identity, error) {
	t := h.table.Load()
	slow := t.Slow(user)
	if h.limiter != nil && h.limiter.LoginBanned(remote, user, slow) {
		return Identity{}, ErrLoginBanned
	}
	id, ok := t.Authenticate(user, password)
	if !ok {
		if h.limiter != nil {
			h.limiter.Pause(h.limiter.LoginFailed(remote, user, slow))
		}
		return Identity{}, ErrLogin
	}
	return id, nil
}
