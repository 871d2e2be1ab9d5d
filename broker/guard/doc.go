// Package guard bounds what a connection may cost the broker before it has
// logged in, so that a broker on the open internet stays reachable for the
// fleet while others knock on it (EMQX calls the same ideas idle_timeout,
// connection rate limits and flapping bans; fail2ban does the banning from
// log lines).
//
// A Guard is asked at two moments:
//
//   - at accept (Admit): an address that is banned, that already holds
//     Limits.MaxPendingPerAddr connections which have not logged in, or that
//     opens connections faster than Limits.ConnectRate (burst
//     Limits.ConnectBurst) is closed at once, as is any connection while
//     Limits.MaxPending connections are waiting to log in (past it, an
//     address that holds none may use a reserve of a tenth more, so that a
//     flood from a few addresses does not shut everyone else out). An admitted
//     connection (*Conn) must complete its TLS handshake and CONNECT within
//     Limits.ConnectTimeout (a read deadline; mochi replaces it with the
//     keepalive deadline once CONNECT is read); its pending slot is given
//     back when it logs in (Conn.Authenticated) or closes.
//   - at login (LoginBanned, LoginFailed, LoginSucceeded): failed logins
//     are counted per address, per (address, username) and per username.
//     From Limits.SlowAfter failures on, each answer is held back longer
//     (250 ms doubling to 10 s). At Limits.BanAfter failures within
//     Limits.Window, for Limits.BanDuration:
//   - the (address, username) pair is refused without its password being
//     checked;
//   - the address is refused at accept, but only when its failures name at
//     least three usernames and nobody logged in from it within the window:
//     a household behind one NAT is not locked out by one misconfigured
//     machine;
//   - a username whose password is a bcrypt hash (a person chose it, and it
//     costs ~60 ms of CPU to check) is refused from every address, which
//     stops a guessing attack spread over many addresses; generated machine
//     tokens are never banned by username (they cannot be guessed and cost
//     microseconds to check, so a ban would only let an attacker lock a
//     machine out).
//
// Each ban is logged once, at WARN, with the address; refusals at accept are
// logged at most once per address per window. Addresses are grouped as
// their /32 (IPv4) or /64 (IPv6, one subscriber's prefix). Addresses in
// Limits.Trusted (loopback by default, as fail2ban's ignoreip) bypass the
// per-address limits, the global bound and the bans, but keep the connect
// deadline. Every table is bounded (Limits.MaxTracked) and swept of expired
// entries, so an attack leaves no memory behind once it ends.
//
// Times come from internal/clock, so that tests move them.
package guard
