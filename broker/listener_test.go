package broker

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lab-fleet/lab/broker/access"
	"github.com/lab-fleet/lab/broker/guard"
	"github.com/lab-fleet/lab/internal/pki"
)

// dialFrom opens a TCP connection to addr from a loopback source address
// of our choosing (all of 127.0.0.0/8 is loopback on Linux), so that a
// test plays several machines.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedWithin reports whether the peer closes c within d (a read returns
// EOF or a reset rather than timing out).
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// login sends a CONNECT with a username and password and returns the
// CONNACK's reason code (or an error when none came back).
func login(t *testing.T, c net.Conn, id, user, password string) (byte, error) {
	t.Helper()
	code, _, err := loginWith(t, c, connectPacket(5, id, user, password))
	return code, err
}

// connectPacket is a CONNECT of MQTT version v (4: 3.1.1, 5).
func connectPacket(v byte, id, user, password string) packets.Packet {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: v,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 30, ClientIdentifier: id, Clean: true}}
	if user != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(user)
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(password)
	}
	return pk
}

// loginWith sends pk and returns the CONNACK's reason (return) code and
// its whole body.
func loginWith(t *testing.T, c net.Conn, pk packets.Packet) (byte, []byte, error) {
	t.Helper()
	var b bytes.Buffer
	if err := pk.ConnectEncode(&b); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b.Bytes()); err != nil {
		return 0, nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	r := bufio.NewReader(c)
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := binary.ReadUvarint(r) // MQTT's remaining length is the same varint
	if err != nil || typ != 0x20 || n > 1<<16 {
		return 0, nil, fmt.Errorf("no CONNACK (type %#x, length %d, %v)", typ, n, err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil || len(body) < 2 {
		return 0, nil, errors.New("no CONNACK")
	}
	return body[1], body, nil
}

// testPKI makes a CA and a broker certificate for 127.0.0.1 in a new
// directory.
func testPKI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := pki.Init(dir, "test", 1); err != nil {
		t.Fatal(err)
	}
	if err := pki.Issue(dir, "broker", []string{"127.0.0.1"}, 1); err != nil {
		t.Fatal(err)
	}
	return dir
}

// noneTrusted makes loopback an ordinary address for the guard.
var noneTrusted = []netip.Prefix{}

// TestGuardClosesSilentAndStalledConnections: a socket that sends nothing,
// and one that completes TLS and then stalls, are closed at the connect
// deadline; past the per-address bound a socket is closed at once; the
// pending count goes back to zero; a client from elsewhere logs in
// throughout.
func TestGuardClosesSilentAndStalledConnections(t *testing.T) {
	dir := testPKI(t)
	s := startServer(t, Config{
		TLSListen: "127.0.0.1:0", TLSCert: filepath.Join(dir, "broker.crt"), TLSKey: filepath.Join(dir, "broker.key"),
		Guard: guard.Limits{ConnectTimeout: 700 * time.Millisecond, MaxPendingPerAddr: 4, Trusted: noneTrusted},
	})
	ln, ok := s.Mochi().Listeners.Get("tls")
	if !ok {
		t.Fatal("no tls listener")
	}
	tlsAddr := ln.Address()

	start := time.Now()
	var silent []net.Conn
	for range 3 {
		silent = append(silent, dialFrom(t, "127.0.0.2", s.Addr()))
	}
	// The 4th pending connection of 127.0.0.2 completes TLS and stalls.
	clientTLS, err := pki.ClientConfig(filepath.Join(dir, pki.CACert), "", "")
	if err != nil {
		t.Fatal(err)
	}
	clientTLS.ServerName = "127.0.0.1"
	stalled := tls.Client(dialFrom(t, "127.0.0.2", tlsAddr), clientTLS)
	if err := stalled.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	// A 5th is over the bound: closed at once.
	if over := dialFrom(t, "127.0.0.2", s.Addr()); !closedWithin(over, 300*time.Millisecond) {
		t.Fatal("a connection past MaxPendingPerAddr was not closed at once")
	}
	// Another machine is not affected.
	if code, err := login(t, dialFrom(t, "127.0.0.3", s.Addr()), "other", "", ""); err != nil || code != 0 {
		t.Fatalf("a client from another address: code %#x, %v", code, err)
	}
	for i, c := range append(silent, stalled) {
		if !closedWithin(c, 3*time.Second) {
			t.Fatalf("connection %d still open %s after accept", i, time.Since(start))
		}
	}
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Fatalf("closed after %s, before the connect timeout", d)
	}
	checkFor(t, 3*time.Second, 20*time.Millisecond, func() error {
		if st := s.guard.Stats(); st.Pending != 0 || st.TimedOut != 4 || st.RefusedPerAddr != 1 {
			return fmt.Errorf("guard stats %+v", st)
		}
		return nil
	})
	if got := testutil.ToFloat64(onlyMetric(s.Collector(), "lab_broker_connect_timeouts_total")); got != 4 {
		t.Errorf("lab_broker_connect_timeouts_total %v, want 4", got)
	}
	// With its slots free, 127.0.0.2 may connect again.
	if code, err := login(t, dialFrom(t, "127.0.0.2", s.Addr()), "back", "", ""); err != nil || code != 0 {
		t.Fatalf("after the timeouts: code %#x, %v", code, err)
	}
}

// TestGuardBansRepeatedWrongPasswords: wrong passwords for one identity
// from one address are slowed down and then refused, even the right one,
// logged once with the address; the same identity from another address
// and another identity from the same address still log in.
func TestGuardBansRepeatedWrongPasswords(t *testing.T) {
	path := tokenIdentities(t, access.Identity{Name: "n1", Role: access.RoleNode}, access.Identity{Name: "n2", Role: access.RoleNode})
	log, logs := testLogger(t)
	s := startServer(t, Config{Identities: path, Logger: log,
		Guard: guard.Limits{SlowAfter: 2, BanAfter: 4, Trusted: noneTrusted}})
	start := time.Now()
	for i := range 4 {
		code, err := login(t, dialFrom(t, "127.0.0.4", s.Addr()), "n1", "n1", "guess")
		if err != nil || code != byte(packets.ErrBadUsernameOrPassword.Code) {
			t.Fatalf("wrong password %d: code %#x, %v", i, code, err)
		}
	}
	// Failures 3 and 4 were held back 250 ms and 500 ms.
	if d := time.Since(start); d < 700*time.Millisecond {
		t.Fatalf("4 failed logins took %s: not slowed down", d)
	}
	if code, err := login(t, dialFrom(t, "127.0.0.4", s.Addr()), "n1", "n1", testToken("n1")); err != nil || code != byte(packets.ErrBanned.Code) {
		t.Fatalf("the banned pair: code %#x, %v; want 0x8a banned", code, err)
	}
	if code, err := login(t, dialFrom(t, "127.0.0.5", s.Addr()), "n1", "n1", testToken("n1")); err != nil || code != 0 {
		t.Fatalf("n1 from another address: code %#x, %v", code, err)
	}
	if code, err := login(t, dialFrom(t, "127.0.0.4", s.Addr()), "n2", "n2", testToken("n2")); err != nil || code != 0 {
		t.Fatalf("n2 from the banned pair's address: code %#x, %v", code, err)
	}
	// The same, as Prometheus counters.
	want := `
# HELP lab_broker_login_bans_total Bans imposed (address, username from address, or username).
# TYPE lab_broker_login_bans_total counter
lab_broker_login_bans_total 1
# HELP lab_broker_login_failures_total Failed logins (bad username or password).
# TYPE lab_broker_login_failures_total counter
lab_broker_login_failures_total 4
# HELP lab_broker_logins_banned_total Logins refused without a password check: the username from that address, or a bcrypt username, is banned.
# TYPE lab_broker_logins_banned_total counter
lab_broker_logins_banned_total 1
`
	if err := testutil.CollectAndCompare(s.Collector(), strings.NewReader(want),
		"lab_broker_login_bans_total", "lab_broker_login_failures_total", "lab_broker_logins_banned_total"); err != nil {
		t.Error(err)
	}
	if n := strings.Count(logs.String(), "login ban:"); n != 1 || !strings.Contains(logs.String(), "addr=127.0.0.4") {
		t.Fatalf("ban logged %d times, want once with the address", n)
	}
}

// Every refused login gets the CONNACK reason that says what is wrong,
// not mochi's one "bad username or password" for all: a client id that
// belongs to another identity is 0x85 (MQTT 3.1.1: 0x02), a Last Will on a
// foreign topic 0x87. A controller may pick any client id of its own.
func TestRefusalsSayWhy(t *testing.T) {
	path := tokenIdentities(t, access.Identity{Name: "n1", Role: access.RoleNode}, access.Identity{Name: "n2", Role: access.RoleNode},
		access.Identity{Name: "ops", Role: access.RoleController})
	log, logs := testLogger(t)
	s := startServer(t, Config{Identities: path, Logger: log})
	tok := testToken
	foreignWill := connectPacket(5, "n1", "n1", tok("n1"))
	foreignWill.Connect.WillFlag, foreignWill.Connect.WillTopic, foreignWill.Connect.WillPayload = true, "lab/v1/node/n2/presence", []byte("x")
	for _, c := range []struct {
		what string
		pk   packets.Packet
		want byte
	}{
		{"n1 as client n2", connectPacket(5, "n2", "n1", tok("n1")), 0x85},
		{"ops as node n1's client id", connectPacket(5, "n1", "ops", tok("ops")), 0x85},
		{"n1 as client n2, MQTT 3.1.1", connectPacket(4, "n2", "n1", tok("n1")), 0x02},
		{"a wrong password", connectPacket(5, "n1", "n1", "guess"), 0x86},
		{"a will on n2's presence", foreignWill, 0x87},
		{"ops with a client id of its own", connectPacket(5, "mqtt-explorer-1a2b", "ops", tok("ops")), 0},
		{"ops with no client id", connectPacket(5, "", "ops", tok("ops")), 0},
		{"n1 as itself", connectPacket(5, "n1", "n1", tok("n1")), 0},
	} {
		code, body, err := loginWith(t, dialFrom(t, "127.0.0.1", s.Addr()), c.pk)
		if err != nil || code != c.want {
			t.Errorf("%s: CONNACK %#x (%v), want %#x", c.what, code, err, c.want)
		}
		if c.want == 0x85 && c.pk.ProtocolVersion == 5 && !bytes.Contains(body, []byte("a node connects as its name")) {
			t.Errorf("%s: no reason string that says how to fix it in %q", c.what, body)
		}
	}
	if !strings.Contains(logs.String(), `reason="client id belongs to another identity (a node must use its name)" username=ops client=n1`) {
		t.Errorf("the refused client id is not logged as such:\n%s", logs)
	}
}

// TestCloseDoesNotWaitForSilentConnections: shutting down closes the
// connections that have not logged in instead of waiting for their
// deadline.
func TestCloseDoesNotWaitForSilentConnections(t *testing.T) {
	s := startServer(t, Config{Guard: guard.Limits{ConnectTimeout: time.Minute}})
	var cs []net.Conn
	for range 10 {
		cs = append(cs, dialFrom(t, "127.0.0.1", s.Addr()))
	}
	checkFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		if s.guard.Stats().Admitted < 10 {
			return errors.New("not all accepted yet")
		}
		return nil
	})
	start := time.Now()
	_ = s.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %s with silent connections open", d)
	}
	for i, c := range cs {
		if !closedWithin(c, time.Second) {
			t.Fatalf("connection %d still open after Close", i)
		}
	}
}

// onlyMetric is the collector's one metric named name (ToFloat64 wants a
// collector of exactly one).
func onlyMetric(c prometheus.Collector, name string) prometheus.Collector {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	return prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == name {
				ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, "x", nil, nil), prometheus.CounterValue, mf.GetMetric()[0].GetCounter().GetValue())
			}
		}
	})
}

// TestGuardOnWebSocket: the WebSocket listener is guarded too. A socket
// that never sends its TLS handshake, one that stops after the handshake
// (no upgrade request), and one that upgrades and sends no CONNECT are
// closed at the connect deadline; an MQTT client over WebSocket logs in
// and gives its pending slot back.
func TestGuardOnWebSocket(t *testing.T) {
	dir := testPKI(t)
	s := startServer(t, Config{
		WSListen: "127.0.0.1:0", TLSCert: filepath.Join(dir, "broker.crt"), TLSKey: filepath.Join(dir, "broker.key"),
		Guard: guard.Limits{ConnectTimeout: 700 * time.Millisecond, Trusted: noneTrusted},
	})
	ln, ok := s.Mochi().Listeners.Get("wss")
	if !ok {
		t.Fatal("no wss listener")
	}
	addr := ln.Address()
	clientTLS, err := pki.ClientConfig(filepath.Join(dir, pki.CACert), "", "")
	if err != nil {
		t.Fatal(err)
	}
	clientTLS.ServerName = "127.0.0.1"
	wsDial := func(src string) *websocket.Conn {
		d := websocket.Dialer{TLSClientConfig: clientTLS, Subprotocols: []string{"mqtt"},
			NetDial: func(network, a string) (net.Conn, error) { return dialFrom(t, src, a), nil }}
		c, _, err := d.Dial("wss://"+addr+"/mqtt", nil)
		if err != nil {
			t.Fatalf("websocket dial: %v", err)
		}
		return c
	}

	start := time.Now()
	silent := dialFrom(t, "127.0.0.2", addr)
	handshaken := tls.Client(dialFrom(t, "127.0.0.2", addr), clientTLS)
	if err := handshaken.Handshake(); err != nil {
		t.Fatal(err)
	}
	upgraded := wsDial("127.0.0.3")
	for i, c := range []net.Conn{silent, handshaken, upgraded.NetConn()} {
		if !closedWithin(c, 3*time.Second) {
			t.Fatalf("connection %d still open after %s", i, time.Since(start))
		}
	}
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Fatalf("closed after %s, before the connect timeout", d)
	}

	// A real MQTT client over WebSocket.
	c := wsDial("127.0.0.4")
	defer c.Close()
	var b bytes.Buffer
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Keepalive: 30, ClientIdentifier: "ws-client", Clean: true}}
	if err := pk.ConnectEncode(&b); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMessage(websocket.BinaryMessage, b.Bytes()); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := c.ReadMessage()
	if err != nil || len(msg) < 4 || msg[0] != 0x20 || msg[3] != 0 {
		t.Fatalf("CONNACK over WebSocket: %x, %v", msg, err)
	}
	checkFor(t, 3*time.Second, 20*time.Millisecond, func() error {
		if st := s.guard.Stats(); st.Pending != 0 || st.TimedOut < 2 {
			return fmt.Errorf("guard stats %+v", st)
		}
		return nil
	})
	// Logged in, it outlives the connect timeout.
	time.Sleep(time.Second)
	if err := c.WriteMessage(websocket.BinaryMessage, []byte{0xc0, 0}); err != nil { // PINGREQ
		t.Fatal(err)
	}
	if _, msg, err := c.ReadMessage(); err != nil || len(msg) < 1 || msg[0] != 0xd0 {
		t.Fatalf("PINGRESP after the connect timeout: %x, %v", msg, err)
	}
}
