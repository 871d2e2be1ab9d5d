package health

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// Check types.
const (
	TypeHTTP    = "http"
	TypeTCP     = "tcp"
	TypeCommand = "command"
	TypeSystemd = "systemd"
)

// Defaults filled in by Validate.
const (
	DefaultTimeout      = 10 * time.Second
	DefaultInterval     = 2 * time.Second
	DefaultRetries      = 2
	DefaultExpectStatus = 200
)

// ErrInvalidCheck is wrapped by every Validate error.
var ErrInvalidCheck = errors.New("invalid health check")

// Check is one local health check, as declared in labd's configuration.
type Check struct {
	Name string `mapstructure:"name" json:"name"`
	// Type is http, tcp, command or systemd.
	Type string `mapstructure:"type" json:"type"`
	// URL is fetched with GET (http); healthy when the status is
	// ExpectStatus (default 200).
	URL          string `mapstructure:"url" json:"url,omitempty"`
	ExpectStatus int    `mapstructure:"expect_status" json:"expect_status,omitempty"`
	// Address is host:port to connect to (tcp).
	Address string `mapstructure:"address" json:"address,omitempty"`
	// Command is an argv run without a shell (command); healthy on exit
	// 0. It gets the Runner's Env (LAB_TOPLEVEL=<new system>).
	Command []string `mapstructure:"command" json:"command,omitempty"`
	// Unit must be active (systemd); empty means "no unit has failed".
	Unit string `mapstructure:"unit" json:"unit,omitempty"`
	// Timeout bounds one attempt (default 10s).
	Timeout time.Duration `mapstructure:"timeout" json:"timeout,omitempty"`
	// Interval separates attempts (default 2s).
	Interval time.Duration `mapstructure:"interval" json:"interval,omitempty"`
	// Retries is the number of attempts after the first failure: 0 means
	// the default (2), a negative value means none.
	Retries int `mapstructure:"retries" json:"retries,omitempty"`
	// Grace is waited after the activation, before the first attempt.
	Grace time.Duration `mapstructure:"grace" json:"grace,omitempty"`
}

// Validate checks c and fills in its defaults. Errors wrap ErrInvalidCheck
// and name the check and the field: `check "web": url: ...`.
func (c *Check) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("check %q: %s: %w: %s", c.Name, field, ErrInvalidCheck, fmt.Sprintf(format, args...))
	}
	if c.Name == "" {
		return bad("name", "empty")
	}
	switch c.Type {
	case TypeHTTP:
		u, err := url.Parse(c.URL)
		if err != nil {
			return bad("url", "%v", err)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return bad("url", "%q: want http://host[:port]/path or https://...", c.URL)
		}
		if c.ExpectStatus == 0 {
			c.ExpectStatus = DefaultExpectStatus
		}
		if c.ExpectStatus < 100 || c.ExpectStatus > 599 {
			return bad("expect_status", "%d is not an HTTP status", c.ExpectStatus)
		}
	case TypeTCP:
		host, port, err := net.SplitHostPort(c.Address)
		if err != nil {
			return bad("address", "%v", err)
		}
		if host == "" || port == "" {
			return bad("address", "%q: want host:port", c.Address)
		}
	case TypeCommand:
		if len(c.Command) == 0 || c.Command[0] == "" {
			return bad("command", "empty argv")
		}
	case TypeSystemd:
	case "":
		return bad("type", "missing: want http, tcp, command or systemd")
	default:
		return bad("type", "%q: want http, tcp, command or systemd", c.Type)
	}
	for _, d := range []struct {
		field string
		v     *time.Duration
		def   time.Duration
	}{{"timeout", &c.Timeout, DefaultTimeout}, {"interval", &c.Interval, DefaultInterval}, {"grace", &c.Grace, 0}} {
		if *d.v < 0 {
			return bad(d.field, "negative duration %s", *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.Retries == 0 {
		c.Retries = DefaultRetries
	}
	if c.Retries < 0 {
		c.Retries = -1
	}
	return nil
}

// attempts returns how many attempts a validated check makes at most.
func (c *Check) attempts() int {
	if c.Retries < 0 {
		return 1
	}
	return 1 + c.Retries
}

// ValidateAll validates every check (filling defaults) and rejects
// duplicate names.
func ValidateAll(checks []Check) error {
	seen := map[string]bool{}
	for i := range checks {
		if err := checks[i].Validate(); err != nil {
			return err
		}
		if seen[checks[i].Name] {
			return fmt.Errorf("check %q: name: %w: duplicate", checks[i].Name, ErrInvalidCheck)
		}
		seen[checks[i].Name] = true
	}
	return nil
}
