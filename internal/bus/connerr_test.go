package bus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/lab-fleet/lab/internal/pki"
	"github.com/lab-fleet/lab/internal/testbroker"
)

// freeAddr is a loopback address nothing listens on (it did a moment ago).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// failFast dials cfg with FailFast and returns what AwaitConnection
// says within a generous deadline, and how long it took.
func failFast(t *testing.T, url string, cfg Config) (error, time.Duration) {
	t.Helper()
	cfg.URLs, cfg.FailFast = []string{url}, true
	if cfg.ClientID == "" {
		cfg.ClientID = "ff"
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err = c.AwaitConnection(ctx)
	took := time.Since(start)
	if err == nil {
		t.Fatalf("connected to %s, want a refusal", url)
	}
	if ctx.Err() != nil {
		t.Fatalf("still waiting after 30 s: %v", err)
	}
	return err, took
}

func wantKind(t *testing.T, err error, kind Kind, words string) *ConnectError {
	t.Helper()
	var ce *ConnectError
	if !errors.As(err, &ce) || ce.Kind != kind || !strings.Contains(err.Error(), words) {
		t.Fatalf("error %q (%#v: %v), want kind %d saying %q", err, ce, errors.Unwrap(ce), kind, words)
	}
	return ce
}

func TestFailFastConnectionRefused(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	err, took := failFast(t, "mqtt://"+addr, Config{})
	wantKind(t, err, KindRefused, "connection refused")
	if !strings.Contains(err.Error(), "mqtt://"+addr) {
		t.Errorf("error %q does not name the URL", err)
	}
	// A starting broker gets its grace.
	if took < connectGrace {
		t.Errorf("gave up after %s, before the %s grace", took, connectGrace)
	}
}

func TestFailFastUnknownHost(t *testing.T) {
	t.Parallel()
	err, _ := failFast(t, "mqtt://nosuchhost.invalid:1883", Config{})
	wantKind(t, err, KindUnknownHost, "nosuchhost.invalid")
}

// authBroker is a mochi broker that knows one user, u with password p.
func authBroker(t *testing.T) string {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.Hook), &auth.Options{Ledger: &auth.Ledger{Auth: auth.AuthRules{
		{Username: "u", Password: "p", Allow: true},
	}}}); err != nil {
		t.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { time.Sleep(100 * time.Millisecond); _ = srv.Close() })
	return "mqtt://" + tcp.Address()
}

func TestFailFastBadPassword(t *testing.T) {
	t.Parallel()
	url := authBroker(t)
	err, took := failFast(t, url, Config{Username: "u", Password: []byte("wrong")})
	ce := wantKind(t, err, KindCredentials, "bad user name or password (MQTT reason 0x86)")
	if ce.Code != 0x86 || !ce.Final() {
		t.Errorf("code 0x%02x final %v", ce.Code, ce.Final())
	}
	if took > 2*time.Second {
		t.Errorf("a final refusal took %s", took) // generous: it is the first answer
	}
	// The right password still connects.
	dial(t, url, "ok", Config{Username: "u", Password: []byte("p")})
}

// tlsBroker is a mochi broker on a TLS listener whose certificate the
// CA in dir signed; it requires a client certificate from that CA.
func tlsBroker(t *testing.T, dir string) string {
	t.Helper()
	if err := pki.Init(dir, "test CA", 1); err != nil {
		t.Fatal(err)
	}
	if err := pki.Issue(dir, "broker", []string{"127.0.0.1"}, 1); err != nil {
		t.Fatal(err)
	}
	cfg, err := pki.ServerConfig(filepath.Join(dir, "broker.crt"), filepath.Join(dir, "broker.key"), filepath.Join(dir, pki.CACert))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClientAuth = 4 // tls.RequireAndVerifyClientCert
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "tls", Address: "127.0.0.1:0", TLSConfig: cfg})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { time.Sleep(100 * time.Millisecond); _ = srv.Close() })
	return l.Address()
}

func TestFailFastTLS(t *testing.T) {
	t.Parallel()
	good, foreign := t.TempDir(), t.TempDir()
	addr := tlsBroker(t, good)
	if err := pki.Init(foreign, "another CA", 1); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1"} {
		if err := pki.Issue(good, n, nil, 1); err != nil {
			t.Fatal(err)
		}
		if err := pki.Issue(foreign, n, nil, 1); err != nil {
			t.Fatal(err)
		}
	}
	client := func(caDir, certDir string) Config {
		c, err := pki.ClientConfig(filepath.Join(caDir, pki.CACert), filepath.Join(certDir, "n1.crt"), filepath.Join(certDir, "n1.key"))
		if err != nil {
			t.Fatal(err)
		}
		return Config{TLS: c}
	}
	t.Run("broker certificate from an untrusted CA", func(t *testing.T) {
		err, _ := failFast(t, "tls://"+addr, client(foreign, good))
		wantKind(t, err, KindTLS, "signed by an authority this client does not trust")
	})
	t.Run("client certificate from another CA", func(t *testing.T) {
		err, _ := failFast(t, "tls://"+addr, client(good, foreign))
		wantKind(t, err, KindTLS, "the broker refused this client's certificate")
	})
	t.Run("TLS to a plain listener", func(t *testing.T) {
		b := testbroker.Start(t)
		err, _ := failFast(t, "tls://"+b.Addr, client(good, good))
		wantKind(t, err, KindClosed, "a plain MQTT listener? then use mqtt://")
	})
	t.Run("plain MQTT to a TLS listener", func(t *testing.T) {
		err, _ := failFast(t, "mqtt://"+addr, Config{})
		wantKind(t, err, KindClosed, "closed the connection")
	})
	t.Run("the right certificates connect", func(t *testing.T) {
		dial(t, "tls://"+addr, "n1", client(good, good))
	})
}

// A broker that accepts the connection but is slow to answer is waited
// for: the fail-fast client does not give up on it.
func TestFailFastWaitsForASlowBroker(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	c, err := Dial(context.Background(), Config{URLs: []string{"mqtt://" + l.Addr().String()}, ClientID: "slow", FailFast: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), connectGrace+time.Second)
	defer cancel()
	err = c.AwaitConnection(ctx)
	var ce *ConnectError
	if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ce) {
		t.Fatalf("got %v, want to be still waiting at the deadline", err)
	}
}

// A daemon's client (no FailFast) keeps trying, and once connected it
// can tell what preceded the connection.
func TestTroubleBeforeConnecting(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	warned := &syncWriter{w: new(strings.Builder)}
	c, err := Dial(context.Background(), Config{URLs: []string{"mqtt://" + addr}, ClientID: "d",
		ConnectHint: func(*ConnectError) string { return "check broker in the config" },
		Logger:      slog.New(slog.NewTextHandler(warned, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	time.Sleep(connectGrace + 500*time.Millisecond) // past the grace: still trying
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	_ = srv.AddHook(new(auth.AllowHook), nil)
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "late", Address: addr})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { time.Sleep(100 * time.Millisecond); _ = srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if err := c.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	tr := c.LastTrouble()
	if tr.Attempts < 2 || tr.Err == nil || tr.Err.Kind != KindRefused || tr.Last.Before(tr.First) {
		t.Fatalf("trouble %+v, want refused attempts", tr)
	}
	log := warned.String()
	if n := strings.Count(log, "cannot connect to the broker"); n != 1 {
		t.Errorf("the same failure logged %d times, want once:\n%s", n, log)
	}
	if !strings.Contains(log, "connection refused") || !strings.Contains(log, "check broker in the config") {
		t.Errorf("log does not say it in words with the hint:\n%s", log)
	}
}

func TestConnackWords(t *testing.T) {
	for code, want := range map[byte]struct {
		kind  Kind
		words string
		final bool
	}{
		0x86: {KindCredentials, "bad user name or password", true},
		0x87: {KindNotAuthorized, "not authorized", true},
		0x85: {KindClientID, "client identifier not valid", true},
		0x88: {KindUnavailable, "server unavailable", false},
		0x89: {KindUnavailable, "server busy", false},
		0x8A: {KindNotAuthorized, "banned", true},
		0x84: {KindProtocol, "unsupported protocol version", true},
		0x9F: {KindUnavailable, "connection rate exceeded", false},
	} {
		e := &ConnectError{URL: "mqtt://x:1", Code: code, Kind: connackKind(code)}
		if e.Kind != want.kind || !strings.Contains(e.Error(), want.words) || e.Final() != want.final {
			t.Errorf("0x%02x: kind %d %q final %v, want %+v", code, e.Kind, e.Error(), e.Final(), want)
		}
	}
}

// syncWriter serialises writes to w (the client logs from its goroutines).
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.(fmt.Stringer).String()
}
