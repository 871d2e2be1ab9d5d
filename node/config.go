package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/clock"
	"github.com/lab-fleet/lab/node/health"
	"github.com/lab-fleet/lab/node/hook"
	"github.com/lab-fleet/lab/node/nixsys"
	"github.com/lab-fleet/lab/proto"
)

// ErrInvalidConfig wraps every configuration error; the message names the key.
var ErrInvalidConfig = errors.New("invalid labd config")

// Config is labd's configuration. Validate fills the defaults.
type Config struct {
	// Clock is the clock of the node's state machine and its timers
	// (nil: the system clock; tests give a clock.Fake).
	Clock        clock.Clock    `mapstructure:"-"`
	Name         string         // node id, [a-z0-9-]{1,63}; also MQTT client id and username
	Groups       []string       // groups whose gates and commands the node follows
	Broker       []string       // broker URLs, e.g. mqtt://broker:1883
	Username     string         // default Name
	PasswordFile string         // MQTT password, read from a file (never from argv)
	TLS          *tls.Config    // for tls:// and wss:// brokers: CA and client certificate (nil: system roots)
	Prefix       string         // topic prefix, default lab/v1
	StateDir     string         // default /var/lib/labd
	Nix          nixsys.Config  // profile path, Nix options, environment
	Checks       []health.Check // local health checks
	// Hooks are the operator's commands around activations and
	// rollbacks (package hook; docs/labd.md, "Deploy hooks").
	Hooks hook.Set
	// CheckInterval is how often the checks run outside rollouts, so that
	// a machine that turns unhealthy between rollouts says so (default
	// 5m; negative: only in rollouts and after a reboot).
	CheckInterval   time.Duration
	FetchTimeout    time.Duration // default 30m
	ActivateTimeout time.Duration // default 10m
	ConfirmTimeout  time.Duration // default 5m
	TrustedKeys     []string      // operator public keys "id:base64": Desired, Gates, Commands; no key at all = accept unsigned (warned)
	ControllerKeys  []string      // controller public keys "id:base64": Gates and Commands only
	BootIDFile      string        // default /proc/sys/kernel/random/boot_id
	SSHHostKeys     string        // glob of the SSH host public keys the status reports, default DefaultSSHHostKeys; "off": none
	KeepAlive       time.Duration // default 30s
	SessionExpiry   time.Duration // default 24h
	Machine         proto.Machine // planning metadata reported in status (reboot order, dependencies)
	RebootCommand   []string      // argv that reboots the machine, default systemctl reboot
	Version         string        // labd version reported in status
	// MetricsTextfileDir is node_exporter's textfile directory: labd
	// writes its metrics to labd.prom in it ("": no file).
	MetricsTextfileDir string
	MetricsInterval    time.Duration // the file is rewritten at least this often, default 30s
	// Dial, when set, opens the broker connections of mqtt:// URLs
	// (the fleet benchmark counts bytes with it); nil: the default.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// RestartCheck is asked after every execution ends; when it says so,
	// Run returns ErrRestart (labd's main exits and systemd starts the
	// new version: the unit has restartIfChanged = false, so that a switch
	// never kills the labd that runs it).
	RestartCheck func() (restart bool, why string)
	Logger       *slog.Logger

	// Secrets is where labd writes the secrets it receives and the key
	// it decrypts them with (docs/secrets.md).
	Secrets SecretsConfig
}

// Validate checks every key and fills defaults; errors name the key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, key, fmt.Sprintf(format, args...)))
	}
	if err := proto.ValidID(c.Name); err != nil {
		bad("name", "%v", err)
	}
	for i, g := range c.Groups {
		if err := proto.ValidID(g); err != nil {
			bad(fmt.Sprintf("groups[%d]", i), "%v", err)
		}
	}
	if len(c.Broker) == 0 {
		bad("broker", "at least one broker URL is required (e.g. mqtt://broker.lan:1883)")
	}
	for i, b := range c.Broker {
		if _, err := bus.ParseURL(b); err != nil {
			bad(fmt.Sprintf("broker[%d]", i), "%q is not a broker URL (mqtt://host:port, tls://, ws://, wss://)", b)
		}
	}
	if c.Username == "" {
		c.Username = c.Name
	}
	if c.PasswordFile != "" {
		if _, err := os.Stat(c.PasswordFile); err != nil {
			bad("password_file", "%v", err)
		}
	}
	if _, err := proto.NewTopics(c.Prefix); err != nil {
		bad("prefix", "%v", err)
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/labd"
	}
	setDur(&c.FetchTimeout, 30*time.Minute)
	setDur(&c.ActivateTimeout, 10*time.Minute)
	setDur(&c.ConfirmTimeout, 5*time.Minute)
	setDur(&c.KeepAlive, 30*time.Second)
	setDur(&c.SessionExpiry, 24*time.Hour)
	setDur(&c.MetricsInterval, 30*time.Second)
	setDur(&c.CheckInterval, 5*time.Minute)
	if c.CheckInterval > 0 && c.CheckInterval < time.Second {
		bad("check_interval", "%s is less than 1s", c.CheckInterval)
	}
	for k, d := range map[string]time.Duration{"timeouts.fetch": c.FetchTimeout, "timeouts.activate": c.ActivateTimeout,
		"timeouts.confirm": c.ConfirmTimeout, "keepalive": c.KeepAlive, "session_expiry": c.SessionExpiry} {
		if d < 0 {
			bad(k, "negative duration %s", d)
		}
	}
	if c.MetricsInterval < time.Second {
		bad("metrics.textfile_interval", "%s is less than 1s", c.MetricsInterval)
	}
	if dir := c.MetricsTextfileDir; dir != "" {
		if !filepath.IsAbs(dir) {
			bad("metrics.textfile_dir", "%q is not an absolute path (node_exporter's --collector.textfile.directory)", dir)
		} else if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
			bad("metrics.textfile_dir", "%s is not a directory", dir)
		} else if err != nil && !errors.Is(err, os.ErrNotExist) {
			bad("metrics.textfile_dir", "%v", err) // a missing one is only warned about: node_exporter may create it later
		}
	}
	if len(c.RebootCommand) == 0 {
		c.RebootCommand = []string{"systemctl", "reboot"}
	}
	if c.BootIDFile == "" {
		c.BootIDFile = "/proc/sys/kernel/random/boot_id"
	}
	if c.SSHHostKeys == "" {
		c.SSHHostKeys = DefaultSSHHostKeys
	}
	if _, err := filepath.Match(c.SSHHostKeys, ""); err != nil || (c.SSHHostKeys != "off" && !filepath.IsAbs(c.SSHHostKeys)) {
		bad("ssh_host_keys", "%q is not an absolute glob such as %s (or off)", c.SSHHostKeys, DefaultSSHHostKeys)
	}
	operator, err := proto.NewKeyring(c.TrustedKeys...)
	if err != nil {
		bad("trusted_keys", "%v", err)
	}
	for i, k := range c.ControllerKeys {
		pub, err := proto.ParsePublicKey(k)
		if err != nil {
			bad(fmt.Sprintf("controller_keys[%d]", i), "%v", err)
		} else if op, ok := operator[pub.ID]; ok && !op.Equal(pub.Key) {
			bad(fmt.Sprintf("controller_keys[%d]", i), "key id %q is also in trusted_keys, with another key: give each key its own id", pub.ID)
		}
	}
	for i := range c.Checks {
		if err := c.Checks[i].Validate(); err != nil {
			bad(fmt.Sprintf("checks[%d]", i), "%v", err)
		} else if err := proto.ValidID(c.Checks[i].Name); err != nil {
			bad(fmt.Sprintf("checks[%d].name", i), "%v", err)
		}
	}
	if err := health.ValidateAll(c.Checks); err != nil && len(errs) == 0 {
		bad("checks", "%v", err)
	}
	c.Hooks.Validate(func(key, problem string) { bad(key, "%s", problem) })
	if err := c.Machine.Validate(); err != nil {
		bad("machine", "%v", err)
	}
	c.Secrets.validate(bad)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return errors.Join(errs...)
}

func setDur(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// Warnings returns what is valid but probably wrong in a validated
// config, one sentence each: labd logs them at start and
// `labd --check-config` prints them.
func (c *Config) Warnings() []string {
	var w []string
	switch {
	case len(c.TrustedKeys) == 0 && len(c.ControllerKeys) == 0:
		w = append(w, "no trusted_keys configured: accepting UNSIGNED desired states; pin the operator's public key (labctl key public)")
	case len(c.TrustedKeys) == 0:
		w = append(w, "controller_keys but no trusted_keys configured: every desired state is REJECTED (controller keys sign gates and commands only); pin the operator's public key (labctl key public)")
	}
	operator, _ := proto.NewKeyring(c.TrustedKeys...)
	for _, k := range c.ControllerKeys {
		if pub, err := proto.ParsePublicKey(k); err == nil && operator[pub.ID] != nil {
			w = append(w, fmt.Sprintf("key %q is in both trusted_keys and controller_keys: as an operator key it may sign desired states too; controller_keys need not repeat operator keys", pub.ID))
		}
	}
	if dir := c.MetricsTextfileDir; dir != "" {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			w = append(w, fmt.Sprintf("metrics.textfile_dir %s does not exist (%v): labd logs each failed write and tries again; "+
				"it should be node_exporter's --collector.textfile.directory", dir, errors.Unwrap(err)))
		}
	}
	profile := c.Nix.Profile
	if profile == "" {
		profile = nixsys.DefaultProfile
	}
	if _, err := os.Stat(profile); err != nil {
		w = append(w, fmt.Sprintf("system profile %s does not exist (%v): labd reports no current system and cannot roll a failed first activation back; "+
			"create it from the running system with: nix-env -p %s --set $(readlink -f /run/current-system) (or --set /nix/store/...-nixos-system-...)",
			profile, errors.Unwrap(err), profile))
	}
	return w
}
