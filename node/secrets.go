package node

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// Secrets (docs/secrets.md): labd takes Secrets from its own retained
// secret topics, decides with planSecret (pure, table-tested), and one
// goroutine, secretKeeper.run, applies: it decrypts with the machine's
// identity, writes the file atomically under SecretsConfig.Dir, restarts
// the named units and reports each secret — never its content — in the
// status. The version of each name only goes up (persisted in the state
// directory), so an old secret cannot be replayed, not even after a
// restart of labd.

// SecretsConfig is where labd keeps the secrets it receives.
type SecretsConfig struct {
	// Dir is the only directory secrets are written under (default
	// /run/lab-secrets, a tmpfs on NixOS: secrets never reach a disk).
	Dir string
	// IdentityFile is the machine's SSH host ed25519 key (default
	// /etc/ssh/ssh_host_ed25519_key); when labd cannot read it, it uses
	// an age identity it creates in its state directory.
	IdentityFile string
	// RestartCommand is the argv run with each unit to restart appended
	// (default systemctl try-restart).
	RestartCommand []string
}

func (c *SecretsConfig) validate(bad func(key, format string, args ...any)) {
	if c.Dir == "" {
		c.Dir = "/run/lab-secrets"
	}
	if c.IdentityFile == "" {
		c.IdentityFile = "/etc/ssh/ssh_host_ed25519_key"
	}
	if len(c.RestartCommand) == 0 {
		c.RestartCommand = []string{"systemctl", "try-restart"}
	}
	if !filepath.IsAbs(c.Dir) || filepath.Clean(c.Dir) != c.Dir || c.Dir == "/" {
		bad("secrets.dir", "%q is not a clean absolute directory (e.g. /run/lab-secrets)", c.Dir)
	}
	if !filepath.IsAbs(c.IdentityFile) {
		bad("secrets.identity_file", "%q is not an absolute path", c.IdentityFile)
	}
}

// secretRecord is what a node remembers of one secret name (persisted).
type secretRecord struct {
	Version uint64 `json:"version"` // high-water mark: the newest version put in place (or removed)
	Path    string `json:"path,omitempty"`
	State   string `json:"state"` // proto.SecretPresent or proto.SecretError
	Error   string `json:"error,omitempty"`
	Removed bool   `json:"removed,omitempty"` // the operator removed it: the file is gone, the mark stays
	At      int64  `json:"at"`                // Unix ms
	// Owner, Group and Mode are what the file was given (Mode 0: written
	// before labd recorded it), checked against what a new system
	// declares (secrets_needed.go).
	Owner string `json:"owner,omitempty"`
	Group string `json:"group,omitempty"`
	Mode  uint32 `json:"mode,omitempty"`
}

// secretInput is one message on a secret topic, decoded and verified by
// intake: msg nil and err nil = removed (empty retained payload).
type secretInput struct {
	name string
	msg  *proto.Secret
	err  error // why the message is not acceptable (decoding, signature, node)
}

type secretOp int

const (
	secretKeep   secretOp = iota // nothing to do
	secretWrite                  // decrypt and write to path, then restart units
	secretRemove                 // remove the file at path
	secretReject                 // refuse: reason; the file stays as it is
)

// secretPlan is what planSecret decided.
type secretPlan struct {
	op     secretOp
	path   string
	reason string
}

// planSecret decides what to do with one input, from the record of its
// name (have: one exists), whether that record's file exists now, the
// time and the secrets directory. It is pure.
func planSecret(rec secretRecord, have bool, in secretInput, fileExists bool, now time.Time, dir string) secretPlan {
	if in.err != nil {
		return secretPlan{op: secretReject, reason: in.err.Error()}
	}
	if in.msg == nil {
		if !have || rec.Removed {
			return secretPlan{op: secretKeep}
		}
		return secretPlan{op: secretRemove, path: rec.Path}
	}
	m := in.msg
	if proto.Expired(m.Expires, now) {
		return secretPlan{op: secretReject, reason: fmt.Sprintf("version %d expired at %s", m.Version, time.UnixMilli(m.Expires).UTC().Format(time.RFC3339))}
	}
	switch {
	case have && m.Version < rec.Version:
		return secretPlan{op: secretReject, reason: fmt.Sprintf("version %d is older than version %d, the newest this node took: a replay, refused", m.Version, rec.Version)}
	case have && m.Version == rec.Version && rec.Removed:
		return secretPlan{op: secretReject, reason: fmt.Sprintf("version %d was removed: set the secret again for a new version", m.Version)}
	case have && m.Version == rec.Version && rec.State == proto.SecretPresent && fileExists:
		return secretPlan{op: secretKeep} // the same message again (a reconnect)
	}
	// Newer, or the same one whose file is gone (/run is empty after a
	// reboot) or was never written.
	path, err := secretPath(dir, m.Name, m.Path)
	if err != nil {
		return secretPlan{op: secretReject, reason: err.Error()}
	}
	return secretPlan{op: secretWrite, path: path}
}

// secretPath is where a secret goes: p, or dir/name when p is empty; it
// must lie strictly under dir.
func secretPath(dir, name, p string) (string, error) {
	if p == "" {
		return filepath.Join(dir, name), nil
	}
	if filepath.Clean(p) != p || !strings.HasPrefix(p, dir+"/") {
		return "", fmt.Errorf("path %s is outside %s, the only directory this node writes secrets to (secrets.dir)", p, dir)
	}
	return p, nil
}
