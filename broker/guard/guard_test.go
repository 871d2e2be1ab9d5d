package guard

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/clock"
)

// fakeConn is a net.Conn from a given remote address.
type fakeConn struct {
	net.Conn
	remote   net.Addr
	closed   bool
	deadline time.Time
}

func (c *fakeConn) RemoteAddr() net.Addr               { return c.remote }
func (c *fakeConn) SetDeadline(t time.Time) error      { c.deadline = t; return nil }
func (c *fakeConn) Close() error                       { c.closed = true; return nil }
func (c *fakeConn) Read(b []byte) (int, error)         { return 0, errors.New("not used") }
func (c *fakeConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(t time.Time) error { return nil }

func from(addr string) *fakeConn {
	return &fakeConn{remote: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr))}
}

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func newTest(t *testing.T, lim Limits) (*Guard, *clock.Fake, *logBuf) {
	t.Helper()
	clk := clock.NewFake(t0)
	logs := new(logBuf)
	if lim.Trusted == nil {
		lim.Trusted = []netip.Prefix{}
	}
	g := New(lim, clk, slog.New(slog.NewTextHandler(logs, nil)))
	t.Cleanup(g.Close)
	return g, clk, logs
}

func TestAdmitBoundsPendingConnections(t *testing.T) {
	g, _, _ := newTest(t, Limits{MaxPending: 5, MaxPendingPerAddr: 3, ConnectBurst: 100})
	var held []*Conn
	for i := range 3 {
		c, err := g.Admit(from("192.0.2.1:1000"))
		if err != nil {
			t.Fatalf("connection %d from one address: %v", i, err)
		}
		held = append(held, c)
	}
	if _, err := g.Admit(from("192.0.2.1:1004")); !errors.Is(err, ErrPendingPerAddr) {
		t.Fatalf("a 4th pending connection from one address: got %v, want ErrPendingPerAddr", err)
	}
	for i := range 2 {
		c, err := g.Admit(from("198.51.100.1:1000"))
		if err != nil {
			t.Fatalf("connection %d from a 2nd address: %v", i, err)
		}
		held = append(held, c)
	}
	// Full: an address that holds a pending connection is refused; one
	// that holds none gets the reserve (a tenth, here 1), then no more.
	if _, err := g.Admit(from("198.51.100.1:1003")); !errors.Is(err, ErrBusy) {
		t.Fatalf("a 6th pending connection overall from a holder: got %v, want ErrBusy", err)
	}
	c, err := g.Admit(from("203.0.113.9:1000"))
	if err != nil {
		t.Fatalf("a newcomer when full (the reserve): %v", err)
	}
	held = append(held, c)
	if _, err := g.Admit(from("203.0.113.10:1000")); !errors.Is(err, ErrBusy) {
		t.Fatalf("past the reserve: got %v, want ErrBusy", err)
	}
	// Trusted addresses do not count and are not counted.
	g.lim.Trusted = DefaultTrusted
	if _, err := g.Admit(from("127.0.0.1:1000")); err != nil {
		t.Fatalf("loopback when trusted: %v", err)
	}
	// A login and a close each give a slot back, once.
	held[0].Authenticated()
	held[0].Authenticated()
	_ = held[1].Close()
	_ = held[1].Close()
	if got := g.Stats().Pending; got != 4 {
		t.Fatalf("pending after one login and one close: %d, want 4", got)
	}
	for range 1 {
		if _, err := g.Admit(from("192.0.2.1:1005")); err != nil {
			t.Fatalf("after slots were given back: %v", err)
		}
	}
	st := g.Stats()
	if st.RefusedPerAddr != 1 || st.RefusedBusy != 2 || st.Admitted != 8 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAdmitSetsTheConnectDeadline(t *testing.T) {
	g, _, _ := newTest(t, Limits{ConnectTimeout: 3 * time.Second})
	raw := from("192.0.2.1:1000")
	if _, err := g.Admit(raw); err != nil {
		t.Fatal(err)
	}
	if d := time.Until(raw.deadline); d < 2*time.Second || d > 3*time.Second {
		t.Fatalf("deadline in %s, want ~3s", d)
	}
}

func TestAdmitRateLimitsPerAddress(t *testing.T) {
	g, clk, logs := newTest(t, Limits{ConnectRate: 2, ConnectBurst: 4})
	admit := func(addr string) error {
		c, err := g.Admit(from(addr))
		if err == nil {
			c.Authenticated()
		}
		return err
	}
	for i := range 4 {
		if err := admit("192.0.2.1:1"); err != nil {
			t.Fatalf("connection %d within the burst: %v", i, err)
		}
	}
	for range 10 {
		if err := admit("192.0.2.1:1"); !errors.Is(err, ErrRate) {
			t.Fatalf("past the burst: got %v, want ErrRate", err)
		}
	}
	if n := logs.count("connection refused"); n != 1 {
		t.Fatalf("10 refusals logged %d times, want once", n)
	}
	if err := admit("192.0.2.2:1"); err != nil {
		t.Fatalf("another address is not limited: %v", err)
	}
	// IPv6 addresses of one /64 share a bucket; another /64 does not.
	for i := range 4 {
		if err := admit("[2001:db8:0:1::" + string(rune('a'+i)) + "]:1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := admit("[2001:db8:0:1::ff]:1"); !errors.Is(err, ErrRate) {
		t.Fatalf("5th connection from one /64: got %v, want ErrRate", err)
	}
	if err := admit("[2001:db8:0:2::1]:1"); err != nil {
		t.Fatalf("another /64: %v", err)
	}
	clk.Advance(time.Second) // two tokens back
	for range 2 {
		if err := admit("192.0.2.1:1"); err != nil {
			t.Fatalf("after a second at 2/s: %v", err)
		}
	}
	if err := admit("192.0.2.1:1"); !errors.Is(err, ErrRate) {
		t.Fatalf("3rd after a second at 2/s: got %v", err)
	}
}

func TestFailedLoginsSlowDownThenBanThePair(t *testing.T) {
	g, clk, logs := newTest(t, Limits{SlowAfter: 2, BanAfter: 6, Window: time.Minute, BanDuration: 5 * time.Minute})
	const me = "192.0.2.1:5000"
	var delays []time.Duration
	for range 6 {
		if g.LoginBanned(me, "laptop", false) {
			t.Fatal("banned before BanAfter failures")
		}
		delays = append(delays, g.LoginFailed(me, "laptop", false))
	}
	want := []time.Duration{0, 0, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}
	for i := range want {
		if delays[i] != want[i] {
			t.Fatalf("delays %v, want %v", delays, want)
		}
	}
	if !g.LoginBanned(me, "laptop", false) {
		t.Fatal("the pair is not banned after BanAfter failures")
	}
	if n := logs.count("login ban"); n != 1 || logs.count("addr=192.0.2.1") == 0 {
		t.Fatalf("ban logged %d times (want once, with the address):\n%s", n, logs.b.String())
	}
	// Never locking out the other identities: another username from the
	// same address, and the same token identity from another address.
	if g.LoginBanned(me, "desktop", false) || g.LoginBanned("198.51.100.7:1", "laptop", false) {
		t.Fatal("the ban reaches beyond its pair")
	}
	// One username's failures (even spread wider) do not ban the address.
	if _, err := g.Admit(from(me)); err != nil {
		t.Fatalf("address refused after one username's failures: %v", err)
	}
	// Lifted by hand (SIGHUP): the pair logs in again, its failures
	// forgotten.
	if n := g.LiftBans(); n != 1 || g.LoginBanned(me, "laptop", false) || g.LoginFailed(me, "laptop", false) != 0 {
		t.Fatalf("after LiftBans (%d lifted): still banned or still slowed down", n)
	}
	for range 5 { // banned again at the 6th failure since the lift
		g.LoginFailed(me, "laptop", false)
	}
	if !g.LoginBanned(me, "laptop", false) {
		t.Fatal("not banned again after BanAfter new failures")
	}
	clk.Advance(5 * time.Minute)
	if g.LoginBanned(me, "laptop", false) {
		t.Fatal("still banned after BanDuration")
	}
	if g.Stats().Bans != 2 {
		t.Fatalf("stats %+v", g.Stats())
	}
}

func TestSlowPasswordsAreBannedByUsername(t *testing.T) {
	g, _, logs := newTest(t, Limits{BanAfter: 4})
	for i := range 4 {
		// A guess from a new address each time: no pair reaches BanAfter.
		g.LoginFailed(netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 1).String(), "alice", true)
		g.LoginFailed(netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 1).String(), "laptop", false)
	}
	if !g.LoginBanned("203.0.113.5:1", "alice", true) {
		t.Fatal("a bcrypt identity guessed from many addresses is not banned")
	}
	if g.LoginBanned("203.0.113.5:1", "laptop", false) {
		t.Fatal("a token identity is banned by username: an attacker could lock the machine out")
	}
	if n := logs.count("login ban: username refused"); n != 1 {
		t.Fatalf("username ban logged %d times", n)
	}
}

func TestAddressBanNeedsManyUsernamesAndNoRecentLogin(t *testing.T) {
	lim := Limits{BanAfter: 6, Window: time.Minute, BanDuration: time.Minute}
	fail := func(g *Guard, addr string, users ...string) {
		for i := range 6 {
			g.LoginFailed(addr, users[i%len(users)], false)
		}
	}
	admitFrom := func(g *Guard, addr string) error {
		c, err := g.Admit(from(addr))
		if err == nil {
			c.Authenticated()
		}
		return err
	}

	g, clk, logs := newTest(t, lim)
	_ = admitFrom(g, "192.0.2.1:1") // the address is tracked from its first connection
	fail(g, "192.0.2.1:1", "a", "b", "c")
	if err := admitFrom(g, "192.0.2.1:2"); !errors.Is(err, ErrBanned) {
		t.Fatalf("address guessing three usernames: got %v, want ErrBanned", err)
	}
	if logs.count("login ban: address refused") != 1 {
		t.Fatalf("address ban not logged once:\n%s", logs.b.String())
	}
	if err := admitFrom(g, "192.0.2.2:1"); err != nil {
		t.Fatalf("a neighbour address: %v", err)
	}
	clk.Advance(time.Minute)
	if err := admitFrom(g, "192.0.2.1:3"); err != nil {
		t.Fatalf("after BanDuration: %v", err)
	}

	// A household NAT: one machine logged in, three others misconfigured.
	g, _, _ = newTest(t, lim)
	_ = admitFrom(g, "198.51.100.1:1")
	g.LoginSucceeded("198.51.100.1:1", "kitchen")
	fail(g, "198.51.100.1:1", "a", "b", "c")
	if err := admitFrom(g, "198.51.100.1:2"); err != nil {
		t.Fatalf("an address with a recent good login was banned: %v", err)
	}
}

func TestTablesAreBoundedAndSwept(t *testing.T) {
	g, clk, _ := newTest(t, Limits{MaxTracked: 16, Window: time.Minute, BanDuration: time.Minute, BanAfter: 3})
	for i := range 40 {
		addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(i%250 + 1)}), 1).String()
		c, err := g.Admit(from(addr))
		if err != nil {
			t.Fatalf("address %d: %v", i, err)
		}
		g.LoginFailed(addr, "u", true)
		c.Authenticated()
	}
	st := g.Stats()
	if st.TrackedAddresses > 16 || st.TrackedPairs > 16 || st.TrackedUsernames > 16 {
		t.Fatalf("tables beyond MaxTracked: %+v", st)
	}
	clk.Advance(2 * time.Minute) // the sweeper runs every minute
	waitFor(t, func() bool {
		st := g.Stats()
		return st.TrackedAddresses == 0 && st.TrackedPairs == 0 && st.TrackedUsernames == 0
	})
}

func TestParseTrusted(t *testing.T) {
	got, err := ParseTrusted([]string{"10.0.0.0/8", " 192.0.2.7 ", "::ffff:192.0.2.8", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.7/32", "192.0.2.8/32", "2001:db8::/32"}
	for i := range want {
		if got[i].String() != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if got, err := ParseTrusted([]string{"none"}); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("none: %v %v (want an empty, non-nil list)", got, err)
	}
	if _, err := ParseTrusted([]string{"10.0.0.0/33", "lan"}); err == nil || !strings.Contains(err.Error(), `"lan"`) {
		t.Fatalf("bad entries: %v", err)
	}
}

func TestLimitsCheck(t *testing.T) {
	var l Limits
	l.FillDefaults()
	if ps := l.Check(); len(ps) != 0 {
		t.Fatalf("defaults: %v", ps)
	}
	l.ConnectTimeout = time.Millisecond
	l.MaxPending = -1
	ps := l.Check()
	if len(ps) != 2 || ps[0].Field != "ConnectTimeout" || ps[1].Field != "MaxPending" {
		t.Fatalf("got %v", ps)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatal("condition not reached within 5s")
}
