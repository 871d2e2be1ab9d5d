package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/lab-fleet/lab/broker/guard"
)

// wsListener is MQTT over WebSocket over TLS with the guard in front, in
// place of mochi's Websocket listener (which binds its own address, so no
// guard can sit at its accept, and has no deadline on the HTTP request
// headers): connections are admitted at accept as on the TCP listener, the
// TLS handshake and the upgrade request must arrive within the connect
// timeout, and so must CONNECT after the upgrade.
type wsListener struct {
	id      string
	address string
	tls     *tls.Config
	guard   *guard.Guard

	mu        sync.Mutex
	ln        net.Listener
	srv       *http.Server
	log       *slog.Logger
	establish listeners.EstablishFn
	end       atomic.Bool
	upgrader  websocket.Upgrader
	conns     tracker
}

var _ listeners.Listener = (*wsListener)(nil)

func newWSListener(id, address string, tlsCfg *tls.Config, g *guard.Guard) *wsListener {
	return &wsListener{id: id, address: address, tls: tlsCfg, guard: g,
		upgrader: websocket.Upgrader{Subprotocols: []string{"mqtt"}, CheckOrigin: func(*http.Request) bool { return true }}}
}

func (l *wsListener) ID() string       { return l.id }
func (l *wsListener) Protocol() string { return "wss" }

func (l *wsListener) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.address
}

// Init binds the address.
func (l *wsListener) Init(log *slog.Logger) error {
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	timeout := l.guard.Limits().ConnectTimeout
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log, l.ln = log, ln
	l.srv = &http.Server{
		Handler:           http.HandlerFunc(l.handle),
		ReadHeaderTimeout: timeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return nil
}

// Serve serves until Close; http.Server retries failed accepts itself.
func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	l.establish = establish
	ln := tls.NewListener(guardedAccept{l.ln, l.guard}, l.tls)
	srv := l.srv
	l.mu.Unlock()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !l.end.Load() {
		l.log.Error("websocket listener stopped", "listener", l.id, "err", err)
	}
}

func (l *wsListener) handle(w http.ResponseWriter, r *http.Request) {
	if !l.conns.add() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	defer l.conns.done()
	c, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered the request
	}
	defer c.Close()
	// The HTTP server clears the deadlines when it hands the connection
	// over: CONNECT must still come within the connect timeout.
	_ = c.UnderlyingConn().SetDeadline(time.Now().Add(l.guard.Limits().ConnectTimeout))
	if err := l.establish(l.id, &wsConn{Conn: c.UnderlyingConn(), c: c}); err != nil {
		l.log.Debug("connection ended", "remote", r.RemoteAddr, "err", err)
	}
}

// Close stops the server, the connections still logging in, and has mochi
// close this listener's clients.
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	if !l.end.CompareAndSwap(false, true) {
		return
	}
	l.mu.Lock()
	srv := l.srv
	l.mu.Unlock()
	l.conns.stop()
	if srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx) // hijacked (upgraded) connections are mochi's
	}
	l.guard.ClosePending()
	closeClients(l.id)
	l.conns.wait(l.log, l.id)
}

// guardedAccept admits each accepted connection through the guard,
// closing those it refuses.
type guardedAccept struct {
	net.Listener
	g *guard.Guard
}

func (a guardedAccept) Accept() (net.Conn, error) {
	for {
		c, err := a.Listener.Accept()
		if err != nil {
			return nil, err
		}
		gc, err := a.g.Admit(c)
		if err != nil {
			_ = c.Close()
			continue
		}
		return gc, nil
	}
}

// wsConn is a WebSocket connection as a net.Conn: MQTT packets in binary
// messages (as mochi's own, which is unexported).
type wsConn struct {
	net.Conn // the TLS connection under the WebSocket
	c        *websocket.Conn
	r        io.Reader // the current message's reader, nil between messages
}

var errNotBinary = errors.New("websocket message is not binary")

func (ws *wsConn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errNotBinary
			}
			ws.r = r
		}
		n, err := ws.r.Read(p)
		if errors.Is(err, io.EOF) {
			ws.r = nil
			if n == 0 {
				continue // the next message
			}
			err = nil
		}
		return n, err
	}
}

func (ws *wsConn) Write(p []byte) (int, error) {
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (ws *wsConn) Close() error { return ws.Conn.Close() }
