package guard

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Defaults of Limits, applied to zero fields by FillDefaults.
const (
	DefaultConnectTimeout    = 10 * time.Second
	DefaultMaxPending        = 1000
	DefaultMaxPendingPerAddr = 64
	DefaultConnectRate       = 10 // per second per address
	DefaultConnectBurst      = 100
	DefaultSlowAfter         = 5
	DefaultBanAfter          = 20
	DefaultWindow            = 10 * time.Minute
	DefaultBanDuration       = 10 * time.Minute
	DefaultMaxTracked        = 1 << 16
)

// The delay before a failed login's answer: baseDelay doubling per failure
// past SlowAfter, at most maxDelay.
const (
	baseDelay = 250 * time.Millisecond
	maxDelay  = 10 * time.Second
)

// DefaultTrusted is the loopback networks, trusted unless Limits.Trusted
// says otherwise.
var DefaultTrusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// Limits configures a Guard. Zero fields take the defaults above.
type Limits struct {
	// ConnectTimeout bounds the time from accept to a completed CONNECT
	// (and TLS handshake).
	ConnectTimeout time.Duration
	// MaxPending bounds the connections that have not logged in yet, from
	// all untrusted addresses together.
	MaxPending int
	// MaxPendingPerAddr bounds them per address.
	MaxPendingPerAddr int
	// ConnectRate and ConnectBurst bound new connections per address: a
	// token bucket of ConnectBurst tokens refilled at ConnectRate a second.
	ConnectRate  float64
	ConnectBurst int
	// SlowAfter failed logins from an address (within Window), answers to
	// it are held back; BanAfter failures ban (see the package doc) for
	// BanDuration.
	SlowAfter   int
	BanAfter    int
	Window      time.Duration
	BanDuration time.Duration
	// Trusted networks bypass every per-address limit and ban. nil means
	// DefaultTrusted (loopback); an empty non-nil slice trusts nobody.
	Trusted []netip.Prefix
	// MaxTracked bounds each table (addresses, address-username pairs,
	// usernames).
	MaxTracked int
}

// FillDefaults sets each zero field to its default.
func (l *Limits) FillDefaults() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	defDur(&l.ConnectTimeout, DefaultConnectTimeout)
	def(&l.MaxPending, DefaultMaxPending)
	def(&l.MaxPendingPerAddr, DefaultMaxPendingPerAddr)
	if l.ConnectRate == 0 {
		l.ConnectRate = DefaultConnectRate
	}
	def(&l.ConnectBurst, DefaultConnectBurst)
	def(&l.SlowAfter, DefaultSlowAfter)
	def(&l.BanAfter, DefaultBanAfter)
	defDur(&l.Window, DefaultWindow)
	defDur(&l.BanDuration, DefaultBanDuration)
	def(&l.MaxTracked, DefaultMaxTracked)
	if l.Trusted == nil {
		l.Trusted = DefaultTrusted
	}
}

// Problem is one invalid field of Limits: its name (as Limits spells it)
// and what is wrong.
type Problem struct {
	Field string
	Err   error
}

// Check returns the fields that are out of range (after FillDefaults).
func (l Limits) Check() []Problem {
	var ps []Problem
	add := func(field string, bad bool, format string, args ...any) {
		if bad {
			ps = append(ps, Problem{field, fmt.Errorf(format, args...)})
		}
	}
	add("ConnectTimeout", l.ConnectTimeout < 100*time.Millisecond || l.ConnectTimeout > time.Hour, "%s is not between 100ms and 1h", l.ConnectTimeout)
	add("MaxPending", l.MaxPending < 1, "%d is not a positive number", l.MaxPending)
	add("MaxPendingPerAddr", l.MaxPendingPerAddr < 1, "%d is not a positive number", l.MaxPendingPerAddr)
	add("ConnectRate", !(l.ConnectRate > 0), "%g is not a positive number of connections a second", l.ConnectRate)
	add("ConnectBurst", l.ConnectBurst < 1, "%d is not a positive number", l.ConnectBurst)
	add("SlowAfter", l.SlowAfter < 1, "%d is not a positive number", l.SlowAfter)
	add("BanAfter", l.BanAfter < 1, "%d is not a positive number", l.BanAfter)
	add("Window", l.Window < time.Second, "%s is shorter than 1s", l.Window)
	add("BanDuration", l.BanDuration < time.Second, "%s is shorter than 1s", l.BanDuration)
	add("MaxTracked", l.MaxTracked < 16, "%d is below 16", l.MaxTracked)
	return ps
}

// ParseTrusted reads a list of networks ("10.0.0.0/8", "192.0.2.7",
// "::1/128"); the single word "none" trusts nobody.
func ParseTrusted(items []string) ([]netip.Prefix, error) {
	out := []netip.Prefix{}
	var errs []error
	for _, s := range items {
		s = strings.TrimSpace(s)
		switch {
		case s == "" || strings.EqualFold(s, "none"):
			continue
		case strings.Contains(s, "/"):
			p, err := netip.ParsePrefix(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("%q is not a network like 10.0.0.0/8", s))
				continue
			}
			out = append(out, p.Masked())
		default:
			a, err := netip.ParseAddr(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("%q is not an address or a network like 10.0.0.0/8", s))
				continue
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out, errors.Join(errs...)
}
