package guard

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/lab-fleet/lab/internal/clock"
)

// Reasons Admit refuses a connection; check them with errors.Is.
var (
	ErrBanned         = errors.New("address banned after repeated failed logins")
	ErrBusy           = errors.New("too many connections waiting to log in")
	ErrPendingPerAddr = errors.New("too many connections from this address waiting to log in")
	ErrRate           = errors.New("connecting too often from this address")
)

// sweepEvery is how often expired entries are dropped from the tables.
const sweepEvery = time.Minute

// usersPerAddr is how many distinct usernames an address's failures must
// name before the address itself is banned.
const usersPerAddr = 3

// Guard applies Limits to connections and logins. Create it with New and
// Close it when the listeners are closed. Its methods are safe for
// concurrent use; one mutex guards the tables (each call holds it for a
// map lookup or two).
type Guard struct {
	lim   Limits
	clock clock.Clock
	log   *slog.Logger

	pending atomic.Int64 // untrusted connections not logged in
	stats   counters

	mu       sync.Mutex
	addrs    map[netip.Prefix]*addrState
	pairs    map[pairKey]*failures
	users    map[string]*failures
	conns    map[*Conn]struct{} // admitted and not logged in, for ClosePending
	stop     chan struct{}      // closed by Close: ends Pause
	lastBusy time.Time          // last time ErrBusy was logged
	full     time.Time          // last time a full table was logged
	sweep    clock.Timer
	closed   bool
}

type addrState struct {
	pending  int
	bucket   *rate.Limiter
	fails    failures
	names    []string // distinct usernames of the failures, up to usersPerAddr
	lastOK   time.Time
	lastWarn time.Time
}

type pairKey struct {
	addr netip.Prefix
	user string
}

// failures counts failed logins within a window that starts at the first.
type failures struct {
	n           int
	since       time.Time
	bannedUntil time.Time
}

func (f *failures) add(now time.Time, window time.Duration) int {
	if now.Sub(f.since) >= window {
		f.n, f.since = 0, now
	}
	f.n++
	return f.n
}

func (f *failures) banned(now time.Time) bool { return now.Before(f.bannedUntil) }

func (f *failures) expired(now time.Time, window time.Duration) bool {
	return !f.banned(now) && now.Sub(f.since) >= window
}

// New returns a Guard over lim (FillDefaults is applied; check it with
// Limits.Check first). clk nil is the real clock; log nil is slog.Default().
func New(lim Limits, clk clock.Clock, log *slog.Logger) *Guard {
	lim.FillDefaults()
	if log == nil {
		log = slog.Default()
	}
	g := &Guard{
		lim:   lim,
		clock: clock.Or(clk),
		log:   log,
		addrs: map[netip.Prefix]*addrState{},
		pairs: map[pairKey]*failures{},
		users: map[string]*failures{},
		conns: map[*Conn]struct{}{},
		stop:  make(chan struct{}),
	}
	g.mu.Lock()
	g.scheduleSweep()
	g.mu.Unlock()
	return g
}

// Limits returns the limits in force (defaults filled).
func (g *Guard) Limits() Limits { return g.lim }

// Close stops the sweeper and ends every Pause. Conns already admitted
// keep working.
func (g *Guard) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.closed = true
	close(g.stop)
	if g.sweep != nil {
		g.sweep.Stop()
	}
}

// ClosePending closes every admitted connection that has not logged in
// (for a shutdown: they would otherwise hold it up until their deadline).
func (g *Guard) ClosePending() {
	g.mu.Lock()
	conns := make([]*Conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Pause waits d (the hold-back LoginFailed returned), or until Close.
func (g *Guard) Pause(d time.Duration) {
	if d <= 0 {
		return
	}
	ch, t := clock.After(g.clock, d)
	defer t.Stop()
	select {
	case <-ch:
	case <-g.stop:
	}
}

func (g *Guard) scheduleSweep() {
	if g.closed {
		return
	}
	g.sweep = g.clock.AfterFunc(sweepEvery, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.prune(g.clock.Now())
		g.scheduleSweep()
	})
}

// key groups an address: IPv4 as its /32, IPv6 as its /64.
func key(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// addrOf parses a remote address ("192.0.2.1:5000", "[2001:db8::1]:5000").
func addrOf(remote string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

func (g *Guard) trusted(a netip.Addr) bool {
	for _, p := range g.lim.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Admit decides on a connection just accepted. Refused, it returns one of
// the errors above and the caller closes c; admitted, it returns c wrapped
// with the connect deadline set, to be used in its place.
func (g *Guard) Admit(c net.Conn) (*Conn, error) {
	gc := &Conn{Conn: c, g: g}
	a, ok := addrOf(c.RemoteAddr().String())
	gc.trusted = !ok || g.trusted(a) // a unix socket or a trusted network
	if !gc.trusted {
		gc.key = key(a)
	}
	if err := g.admit(gc, g.clock.Now()); err != nil {
		g.stats.refused(err)
		return nil, err
	}
	// A socket deadline is on the system's clock, not on g.clock.
	if err := c.SetDeadline(time.Now().Add(g.lim.ConnectTimeout)); err != nil {
		gc.release()
		return nil, err
	}
	return gc, nil
}

// admit checks an untrusted connection against the limits and, admitted,
// takes its pending slot; every admitted connection is recorded for
// ClosePending.
func (g *Guard) admit(gc *Conn, now time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !gc.trusted {
		st, err := g.check(gc.key, now)
		if err != nil {
			return err
		}
		if st != nil {
			st.pending++
		}
		g.pending.Add(1)
	}
	g.conns[gc] = struct{}{}
	g.stats.admitted.Add(1)
	return nil
}

// check returns the address's entry (nil when the table is full) or the
// reason to refuse it, logging the refusal once per address per window.
func (g *Guard) check(k netip.Prefix, now time.Time) (*addrState, error) {
	st := g.addrs[k]
	if st == nil {
		st = g.newAddr(k, now)
	}
	var err error
	switch {
	case st != nil && st.fails.banned(now):
		err = ErrBanned
	case g.noRoom(st):
		if now.Sub(g.lastBusy) >= time.Minute {
			g.lastBusy = now
			g.log.Warn("connection refused: too many connections waiting to log in", "addr", k.Addr().String(), "pending", g.pending.Load(), "limit", g.lim.MaxPending)
		}
		return nil, ErrBusy
	case st == nil: // the table is full: the global bound only
		return nil, nil
	case st.pending >= g.lim.MaxPendingPerAddr:
		err = ErrPendingPerAddr
	case !st.bucket.AllowN(now, 1):
		err = ErrRate
	default:
		return st, nil
	}
	if now.Sub(st.lastWarn) >= g.lim.Window {
		st.lastWarn = now
		if err != ErrBanned { // the ban itself was logged
			g.log.Warn("connection refused", "addr", k.Addr().String(), "reason", err.Error())
		}
	} else {
		g.log.Debug("connection refused", "addr", k.Addr().String(), "reason", err.Error())
	}
	return st, err
}

// noRoom reports whether the pending connections leave no room for one from
// st. Past MaxPending, an address holding no pending connection may still
// use a reserve of a tenth more: a flood from a few addresses does not
// lock everyone else out (the reserve, too, is spent by addresses that
// hold none).
func (g *Guard) noRoom(st *addrState) bool {
	n := g.pending.Load()
	if n < int64(g.lim.MaxPending) {
		return false
	}
	return st == nil || st.pending > 0 || n >= int64(g.lim.MaxPending+max(g.lim.MaxPending/10, 1))
}

// newAddr adds an address to the table; nil when the table is full even
// after a sweep (the address is then admitted under the global bound only).
func (g *Guard) newAddr(k netip.Prefix, now time.Time) *addrState {
	if !g.room(func() int { return len(g.addrs) }, now, "addresses") {
		return nil
	}
	st := &addrState{bucket: rate.NewLimiter(rate.Limit(g.lim.ConnectRate), g.lim.ConnectBurst)}
	g.addrs[k] = st
	return st
}

func (g *Guard) tableFull(now time.Time, what string) {
	if now.Sub(g.full) >= time.Minute {
		g.full = now
		g.log.Warn("connection guard: table full, new entries not tracked until old ones expire", "table", what, "limit", g.lim.MaxTracked)
	}
}

// release gives c's pending slot back.
func (g *Guard) release(c *Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.conns, c)
	if c.trusted {
		return
	}
	g.pending.Add(-1)
	if st := g.addrs[c.key]; st != nil && st.pending > 0 {
		st.pending--
	}
}

// LiftBans forgets every ban and every counted failure (the operator
// fixed what failed: SIGHUP). It returns how many bans were in force.
func (g *Guard) LiftBans() int {
	now := g.clock.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, st := range g.addrs {
		if st.fails.banned(now) {
			n++
		}
		st.fails, st.names = failures{}, st.names[:0]
	}
	for _, f := range g.pairs {
		if f.banned(now) {
			n++
		}
	}
	for _, f := range g.users {
		if f.banned(now) {
			n++
		}
	}
	clear(g.pairs)
	clear(g.users)
	return n
}

// LoginBanned reports whether a login by user from remote is refused
// without checking its password: the pair is banned, or, for a password
// that is expensive to check (slow: a bcrypt hash), the username is.
func (g *Guard) LoginBanned(remote, user string, slow bool) bool {
	a, ok := addrOf(remote)
	if !ok || g.trusted(a) {
		return false
	}
	now := g.clock.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	banned := false
	if p := g.pairs[pairKey{key(a), user}]; p != nil && p.banned(now) {
		banned = true
	}
	if u := g.users[user]; slow && u != nil && u.banned(now) {
		banned = true
	}
	if banned {
		g.stats.loginsRefused.Add(1)
	}
	return banned
}

// LoginFailed records a failed login and returns how long to hold the
// refusal back. It bans as the package doc says, logging each ban once.
func (g *Guard) LoginFailed(remote, user string, slow bool) time.Duration {
	g.stats.loginFailures.Add(1)
	a, ok := addrOf(remote)
	if !ok || g.trusted(a) {
		return 0
	}
	k := key(a)
	now := g.clock.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	st := g.addrs[k]
	if st == nil {
		st = g.newAddr(k, now)
	}
	if st != nil {
		if n = st.fails.add(now, g.lim.Window); n == 1 {
			st.names = st.names[:0] // a new window
		}
		if len(st.names) < usersPerAddr && !contains(st.names, user) {
			st.names = append(st.names, user)
		}
		if n >= g.lim.BanAfter && !st.fails.banned(now) && len(st.names) >= usersPerAddr && now.Sub(st.lastOK) >= g.lim.Window {
			g.ban(&st.fails, now, "address", "addr", k.Addr().String(), "failures", n, "usernames", len(st.names))
		}
	}
	pk := pairKey{k, user}
	p := g.pairs[pk]
	if p == nil && g.room(func() int { return len(g.pairs) }, now, "address-username pairs") {
		p = new(failures)
		g.pairs[pk] = p
	}
	if p != nil && p.add(now, g.lim.Window) >= g.lim.BanAfter && !p.banned(now) {
		g.ban(p, now, "username from address", "addr", k.Addr().String(), "username", user, "failures", p.n)
	}
	un := 0
	if slow {
		u := g.users[user]
		if u == nil && g.room(func() int { return len(g.users) }, now, "usernames") {
			u = new(failures)
			g.users[user] = u
		}
		if u != nil {
			if un = u.add(now, g.lim.Window); un >= g.lim.BanAfter && !u.banned(now) {
				g.ban(u, now, "username", "addr", k.Addr().String(), "username", user, "failures", un)
			}
		}
	}
	return delay(max(n, un), g.lim.SlowAfter)
}

// room reports whether a table may grow (size reports its length),
// sweeping the tables once when it is full.
func (g *Guard) room(size func() int, now time.Time, what string) bool {
	if size() < g.lim.MaxTracked {
		return true
	}
	g.prune(now)
	if size() < g.lim.MaxTracked {
		return true
	}
	g.tableFull(now, what)
	return false
}

func (g *Guard) ban(f *failures, now time.Time, what string, attrs ...any) {
	f.bannedUntil = now.Add(g.lim.BanDuration)
	g.stats.bans.Add(1)
	g.log.Warn("login ban: "+what+" refused after repeated failed logins", append(attrs, "for", g.lim.BanDuration.String(), "until", f.bannedUntil.UTC().Format(time.RFC3339))...)
}

// LoginSucceeded records a login: the pair's failures are forgotten and
// the address is known good for a window.
func (g *Guard) LoginSucceeded(remote, user string) {
	a, ok := addrOf(remote)
	if !ok || g.trusted(a) {
		return
	}
	k := key(a)
	now := g.clock.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if st := g.addrs[k]; st != nil {
		st.lastOK = now
	}
	if p := g.pairs[pairKey{k, user}]; p != nil && !p.banned(now) {
		delete(g.pairs, pairKey{k, user})
	}
}

// delay is the hold-back after n failures.
func delay(n, slowAfter int) time.Duration {
	if n <= slowAfter {
		return 0
	}
	d := baseDelay << min(n-slowAfter-1, 6)
	return min(d, maxDelay)
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// prune drops the entries that hold nothing: no pending connection, no
// ban, no failure within the window, a full token bucket.
func (g *Guard) prune(now time.Time) {
	w := g.lim.Window
	for k, st := range g.addrs {
		if st.pending == 0 && st.fails.expired(now, w) && now.Sub(st.lastOK) >= w &&
			st.bucket.TokensAt(now) >= float64(g.lim.ConnectBurst) {
			delete(g.addrs, k)
		}
	}
	for k, f := range g.pairs {
		if f.expired(now, w) {
			delete(g.pairs, k)
		}
	}
	for k, f := range g.users {
		if f.expired(now, w) {
			delete(g.users, k)
		}
	}
}

// Stats is what the guard has done since New (counters) and holds now
// (Pending, Tracked).
type Stats struct {
	Admitted         uint64 // connections admitted
	RefusedBanned    uint64 // refused at accept: address banned
	RefusedBusy      uint64 // refused at accept: MaxPending reached
	RefusedPerAddr   uint64 // refused at accept: MaxPendingPerAddr reached
	RefusedRate      uint64 // refused at accept: ConnectRate exceeded
	TimedOut         uint64 // closed for not logging in within ConnectTimeout
	LoginFailures    uint64 // failed logins
	LoginsRefused    uint64 // logins refused unchecked (banned pair or username)
	Bans             uint64 // bans imposed
	Pending          int64  // untrusted connections not logged in yet
	TrackedAddresses int    // entries in the address table
	TrackedPairs     int    // entries in the address-username table
	TrackedUsernames int    // entries in the username table
	BannedAddresses  int    // addresses banned now
}

type counters struct {
	admitted, refusedBanned, refusedBusy, refusedPerAddr, refusedRate atomic.Uint64
	timedOut, loginFailures, loginsRefused, bans                      atomic.Uint64
}

func (c *counters) refused(err error) {
	switch err {
	case ErrBanned:
		c.refusedBanned.Add(1)
	case ErrBusy:
		c.refusedBusy.Add(1)
	case ErrPendingPerAddr:
		c.refusedPerAddr.Add(1)
	case ErrRate:
		c.refusedRate.Add(1)
	}
}

// Stats returns the counters and table sizes.
func (g *Guard) Stats() Stats {
	now := g.clock.Now()
	g.mu.Lock()
	banned := 0
	for _, st := range g.addrs {
		if st.fails.banned(now) {
			banned++
		}
	}
	s := Stats{TrackedAddresses: len(g.addrs), TrackedPairs: len(g.pairs), TrackedUsernames: len(g.users), BannedAddresses: banned}
	g.mu.Unlock()
	s.Admitted = g.stats.admitted.Load()
	s.RefusedBanned = g.stats.refusedBanned.Load()
	s.RefusedBusy = g.stats.refusedBusy.Load()
	s.RefusedPerAddr = g.stats.refusedPerAddr.Load()
	s.RefusedRate = g.stats.refusedRate.Load()
	s.TimedOut = g.stats.timedOut.Load()
	s.LoginFailures = g.stats.loginFailures.Load()
	s.LoginsRefused = g.stats.loginsRefused.Load()
	s.Bans = g.stats.bans.Load()
	s.Pending = g.pending.Load()
	return s
}

// Conn is an admitted connection. It holds a pending slot until
// Authenticated or Close.
type Conn struct {
	net.Conn
	g        *Guard
	key      netip.Prefix
	trusted  bool
	once     sync.Once
	authed   atomic.Bool
	timedOut atomic.Bool
}

// Authenticated marks the connection logged in: its pending slot is given
// back.
func (c *Conn) Authenticated() {
	c.authed.Store(true)
	c.release()
}

// Read reads from the connection, counting a connect deadline that passed.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	var ne net.Error
	if err != nil && !c.authed.Load() && errors.As(err, &ne) && ne.Timeout() && c.timedOut.CompareAndSwap(false, true) {
		c.g.stats.timedOut.Add(1)
		c.g.log.Debug("connection closed: no login within the connect timeout", "remote", c.RemoteAddr().String(), "timeout", c.g.lim.ConnectTimeout.String())
	}
	return n, err
}

// Close closes the connection and gives its pending slot back.
func (c *Conn) Close() error {
	c.release()
	return c.Conn.Close()
}

func (c *Conn) release() {
	c.once.Do(func() { c.g.release(c) })
}
