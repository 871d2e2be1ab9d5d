package node

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/node/health"
	"github.com/lab-fleet/lab/node/nixsys/nixsystest"
	"github.com/lab-fleet/lab/proto"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{Name: "n1", Broker: []string{"mqtt://b:1883"}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Username != "n1" || c.StateDir != "/var/lib/labd" || c.FetchTimeout != 30*time.Minute || c.ConfirmTimeout != 5*time.Minute ||
		c.KeepAlive != 30*time.Second || c.SessionExpiry != 24*time.Hour || len(c.RebootCommand) == 0 || c.Logger == nil ||
		c.MetricsTextfileDir != "" || c.MetricsInterval != 30*time.Second {
		t.Fatalf("defaults not filled: %+v", c)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	base := func() Config { return Config{Name: "n1", Broker: []string{"mqtt://b:1883"}} }
	for _, tc := range []struct {
		key string
		mod func(*Config)
	}{
		{"name", func(c *Config) { c.Name = "N 1" }},
		{"groups[1]", func(c *Config) { c.Groups = []string{"web", "Bad!"} }},
		{"broker", func(c *Config) { c.Broker = nil }},
		{"broker[0]", func(c *Config) { c.Broker = []string{"http://b:80"} }},
		{"password_file", func(c *Config) { c.PasswordFile = "/nonexistent/pw" }},
		{"prefix", func(c *Config) { c.Prefix = "a/+/b" }},
		{"timeouts.fetch", func(c *Config) { c.FetchTimeout = -time.Second }},
		{"trusted_keys", func(c *Config) { c.TrustedKeys = []string{"op:not-base64"} }},
		{"controller_keys[0]", func(c *Config) { c.ControllerKeys = []string{"ctl:not-base64"} }},
		{"controller_keys[1]", func(c *Config) {
			c.TrustedKeys = []string{"op:3o0Hq4zY0m8oD2cR9c5m8oYv7jKxk3lJ9mZbZcN0Q1k="}
			c.ControllerKeys = []string{"ctl:3o0Hq4zY0m8oD2cR9c5m8oYv7jKxk3lJ9mZbZcN0Q1k=", "op:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}
		}},
		{"checks[0]", func(c *Config) { c.Checks = []health.Check{{Name: "web", Type: "ftp"}} }},
		{"machine", func(c *Config) { c.Machine = proto.Machine{Dependencies: []string{"DB"}} }},
		{"metrics.textfile_dir", func(c *Config) { c.MetricsTextfileDir = "var/lib/node-exporter" }},
		{"metrics.textfile_dir", func(c *Config) { c.MetricsTextfileDir = filepath.Join(notDir, "x") }},
		{"metrics.textfile_dir", func(c *Config) { c.MetricsTextfileDir = notDir }},
		{"metrics.textfile_interval", func(c *Config) { c.MetricsInterval = 500 * time.Millisecond }},
		{"metrics.textfile_interval", func(c *Config) { c.MetricsInterval = -time.Second }},
	} {
		c := base()
		tc.mod(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.key+":") {
			t.Errorf("%s: err = %v", tc.key, err)
		}
	}
}

// labd warns at start about a missing system profile (it could not roll a
// failed first activation back) and says how to create one; and about
// missing trusted keys.
func TestNewWarnsAboutMissingProfileAndKeys(t *testing.T) {
	dir := t.TempDir()
	profile := filepath.Join(dir, "profiles", "system")
	var logs bytes.Buffer
	c := Config{Name: "n1", Broker: []string{"mqtt://b:1883"}, StateDir: filepath.Join(dir, "state"),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	c.Nix.Profile = profile
	if _, err := New(c, nixsystest.New()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"no trusted_keys configured", "system profile " + profile + " does not exist", "nix-env -p " + profile + " --set"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the start log does not say %q:\n%s", want, logs.String())
		}
	}
	c.Nix.Profile, c.TrustedKeys = dir, []string{"op:3o0Hq4zY0m8oD2cR9c5m8oYv7jKxk3lJ9mZbZcN0Q1k="}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("warnings for a config with a key and an existing profile: %q", w)
	}
	// A textfile directory that does not exist (yet): valid, warned.
	c.MetricsTextfileDir = filepath.Join(dir, "node-exporter")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], "metrics.textfile_dir "+c.MetricsTextfileDir+" does not exist") {
		t.Errorf("warnings for a missing textfile directory: %q", w)
	}
}
