package node

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/node/nixsys/nixsystest"
	"github.com/lab-fleet/lab/proto"
)

const (
	hostEd25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyTestEd25519AAAAAAAAAAAAAAAAAAAAAAAA"
	hostECDSA   = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHostKeyTest="
	hostRSA     = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQHostKeyTest+/="
)

// A real labd reports the SSH host public keys its glob finds, without
// their comments, ed25519 first; a file that is no key is left out, and
// a machine without keys reports none (and still reports).
func TestStatusReportsSSHHostKeys(t *testing.T) {
	key, err := proto.GenerateKey("test")
	if err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	for name, content := range map[string]string{
		"ssh_host_rsa_key.pub":     hostRSA + " root@n1\n",
		"ssh_host_ed25519_key.pub": hostEd25519 + " root@n1\n",
		"ssh_host_ecdsa_key.pub":   hostECDSA + "\n",
		"ssh_host_bogus_key.pub":   "ssh-dss AAAA root@n1\n",
		"ssh_host_ed25519_key":     "-----BEGIN OPENSSH PRIVATE KEY-----\n", // not matched by the glob
	} {
		if err := os.WriteFile(filepath.Join(keys, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, statuses, _ := testNodeWith(t, nixsystest.New(), key, nil, func(c *Config) {
		c.SSHHostKeys = filepath.Join(keys, "ssh_host_*_key.pub")
	})
	s := awaitStatus(t, statuses, func(s proto.NodeStatus) bool { return len(s.HostKeys) > 0 })
	if want := []string{hostEd25519, hostECDSA, hostRSA}; !slices.Equal(s.HostKeys, want) {
		t.Fatalf("host_keys = %q, want %q", s.HostKeys, want)
	}

	_, none, _ := testNodeWith(t, nixsystest.New(), key, nil, func(c *Config) {
		c.SSHHostKeys = filepath.Join(t.TempDir(), "ssh_host_*_key.pub")
	})
	if s := awaitStatus(t, none, func(proto.NodeStatus) bool { return true }); s.HostKeys != nil {
		t.Fatalf("no key files, host_keys = %q", s.HostKeys)
	}
}

func TestSSHHostKeysConfig(t *testing.T) {
	for glob, ok := range map[string]bool{"": true, "off": true, "/etc/ssh/*.pub": true, "etc/ssh/*.pub": false, "/etc/ssh/[.pub": false} {
		c := Config{Name: "n1", Broker: []string{"mqtt://127.0.0.1:1883"}, SSHHostKeys: glob}
		err := c.Validate()
		if (err == nil) != ok {
			t.Errorf("ssh_host_keys %q: %v", glob, err)
		}
		if glob == "" && c.SSHHostKeys != DefaultSSHHostKeys {
			t.Errorf("default ssh_host_keys = %q", c.SSHHostKeys)
		}
	}
}

func awaitStatus(t *testing.T, statuses chan proto.NodeStatus, ok func(proto.NodeStatus) bool) proto.NodeStatus {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case s := <-statuses:
			if ok(s) {
				return s
			}
		case <-deadline:
			t.Fatal("no such status within 10s")
		}
	}
}

// ssh_host_keys: off reports none, even where the default finds keys;
// a key file longer than a key is read only as far as its first line.
func TestSSHHostKeysOffAndLongFiles(t *testing.T) {
	dir := t.TempDir()
	long := hostEd25519 + " " + strings.Repeat("c", 64<<10) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "a.pub"), []byte(long), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{cfg: Config{SSHHostKeys: "off"}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if got := d.hostKeys(); got != nil {
		t.Fatalf("off: %q", got)
	}
	d.cfg.SSHHostKeys = filepath.Join(dir, "*.pub")
	if got := d.hostKeys(); !slices.Equal(got, []string{hostEd25519}) {
		t.Fatalf("long comment: %q", got)
	}
}
