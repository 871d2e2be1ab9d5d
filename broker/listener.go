package broker

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/lab-fleet/lab/broker/guard"
)

// listener is a TCP (or TLS) listener for mochi with the guard in front:
// an accepted connection is admitted or closed before anything is read
// from it, its TLS handshake and CONNECT run under the connect deadline,
// and a failed Accept (EMFILE: out of descriptors) pauses the loop instead
// of ending it, as net/http does. mochi's own TCP listener stops accepting
// for good at the first Accept error and reads CONNECT without a deadline.
type listener struct {
	id      string
	address string
	tls     *tls.Config // nil: plain TCP
	guard   *guard.Guard
	log     *slog.Logger

	mu    sync.Mutex
	ln    net.Listener
	end   atomic.Bool
	conns tracker
}

var _ listeners.Listener = (*listener)(nil)

func newListener(id, address string, tlsCfg *tls.Config, g *guard.Guard) *listener {
	return &listener{id: id, address: address, tls: tlsCfg, guard: g}
}

func (l *listener) ID() string       { return l.id }
func (l *listener) Protocol() string { return "tcp" }

// Address is the bound host:port once Init has run.
func (l *listener) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Init binds the address.
func (l *listener) Init(log *slog.Logger) error {
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.log, l.ln = log, ln
	l.mu.Unlock()
	return nil
}

// Serve accepts until Close.
func (l *listener) Serve(establish listeners.EstablishFn) {
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if l.end.Load() {
			if c != nil {
				_ = c.Close()
			}
			return
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed; retrying", "listener", l.id, "err", err, "retry_in", backoff.String())
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		gc, err := l.guard.Admit(c)
		if err != nil {
			_ = c.Close()
			continue
		}
		var conn net.Conn = gc
		if l.tls != nil {
			conn = tls.Server(gc, l.tls)
		}
		if !l.conns.add() {
			_ = conn.Close()
			return
		}
		go func() {
			defer l.conns.done()
			// Refused logins are logged by the access hook, timeouts by the
			// guard; what ends here is routine (EOF, a client's disconnect).
			if err := establish(l.id, conn); err != nil {
				l.log.Debug("connection ended", "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// Close stops accepting, closes the connections still logging in, and
// has mochi close this listener's clients.
func (l *listener) Close(closeClients listeners.CloseFn) {
	if !l.end.CompareAndSwap(false, true) {
		return
	}
	l.mu.Lock()
	ln := l.ln
	l.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	l.conns.stop()
	l.guard.ClosePending()
	closeClients(l.id)
	l.conns.wait(l.log, l.id)
}

// tracker counts a listener's goroutines that hand a connection to mochi,
// so that the listener's Close waits for them: mochi v2.7.9 races its
// Close against an EstablishConnection still running (seen under -race).
type tracker struct {
	mu      sync.Mutex
	stopped bool // no goroutine is added once Close waits
	wg      sync.WaitGroup
}

// add counts one more goroutine; false once the listener closes.
func (t *tracker) add() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *tracker) done() { t.wg.Done() }

func (t *tracker) stop() {
	t.mu.Lock()
	t.stopped = true
	t.mu.Unlock()
}

// wait waits for the counted goroutines. Every connection is closed by
// then (logging in: by the guard; clients: by mochi), so they end at once;
// a stuck one holds the shutdown 5 s at most.
func (t *tracker) wait(log *slog.Logger, id string) {
	waited := make(chan struct{})
	go func() { t.wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		if log != nil {
			log.Warn("connections still ending after 5s; closing anyway", "listener", id)
		}
	}
}

// guardConn returns the guard's connection under a client's network
// connection (nil for the inline client).
func guardConn(c net.Conn) *guard.Conn {
	if ws, ok := c.(*wsConn); ok {
		c = ws.Conn
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	gc, _ := c.(*guard.Conn)
	return gc
}
