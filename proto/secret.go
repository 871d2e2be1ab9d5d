package proto

import (
	"fmt"
	"path"
	"strings"
)

// Secret is one file a machine must hold, encrypted end to end to that
// machine's own age recipient (NodeStatus.Recipient) and signed by the
// operator's key. Retained on <p>/node/<node>/secret/<name>, which only
// that node may read (docs/secrets.md); an empty retained payload there
// means the secret was removed. The broker, its disk and every other
// client see Ciphertext only.
type Secret struct {
	Envelope `msgpack:",inline"`
	Node     string `msgpack:"node" json:"node"`
	Name     string `msgpack:"name" json:"name"`
	// Version is monotonic per node and name (labctl uses Unix ms): the
	// node takes only a version newer than the one it has, so an old
	// secret cannot be replayed.
	Version uint64 `msgpack:"version" json:"version"`
	// Ciphertext is the age encryption (binary format) of the content.
	Ciphertext []byte `msgpack:"ciphertext" json:"ciphertext"`
	// Path is where the node writes the file: absolute and clean; ""
	// means <the node's secrets dir>/<name>. The node refuses a path
	// outside its secrets dir.
	Path  string `msgpack:"path" json:"path"`
	Owner string `msgpack:"owner" json:"owner"` // user name or uid; "" = labd's own user
	Group string `msgpack:"group" json:"group"` // group name or gid; "" = labd's own group
	// Mode is the file's permission bits (at most 0o777); 0 = 0o400.
	Mode uint32 `msgpack:"mode" json:"mode"`
	// Restart names the systemd units to restart once the file changed.
	Restart []string `msgpack:"restart" json:"restart"`
	Expires int64    `msgpack:"expires" json:"expires"` // Unix ms; 0 = never
	KeyID   string   `msgpack:"key_id" json:"key_id"`
	Sig     []byte   `msgpack:"sig" json:"sig,omitempty"`
}

func (s *Secret) sigFields() (*string, *[]byte) { return &s.KeyID, &s.Sig }

// Bounds of a Secret.
const (
	// MaxSecretContent is the largest ciphertext a Secret carries (the
	// message itself is at most MaxSize(KindSecret)).
	MaxSecretContent = 240 << 10
	maxSecretUnits   = 16
	maxSecretPath    = 1024
	// MaxReportedSecrets is how many secrets a status lists at most.
	MaxReportedSecrets = 32
	maxSecretError     = 512
	maxRecipient       = 256
)

// Validate checks every field of a Secret.
func (s *Secret) Validate() error {
	if err := s.Envelope.validate(KindSecret); err != nil {
		return err
	}
	switch {
	case ValidID(s.Node) != nil:
		return field("node", ValidID(s.Node))
	case ValidID(s.Name) != nil:
		return field("name", ValidID(s.Name))
	case s.Version == 0:
		return invalid("version", "must be > 0")
	case len(s.Ciphertext) == 0 || len(s.Ciphertext) > MaxSecretContent:
		return invalid("ciphertext", "%d bytes, want 1..%d", len(s.Ciphertext), MaxSecretContent)
	case s.Mode&^0o777 != 0:
		return invalid("mode", "%#o: only permission bits (at most 0777)", s.Mode)
	case s.Expires < 0:
		return invalid("expires", "negative")
	case len(s.Sig) > 128:
		return invalid("sig", "%d bytes", len(s.Sig))
	}
	if s.Path != "" {
		if err := ValidSecretPath(s.Path); err != nil {
			return field("path", err)
		}
	}
	for name, v := range map[string]string{"owner": s.Owner, "group": s.Group} {
		if err := validAccount(v); err != nil {
			return field(name, err)
		}
	}
	if len(s.Restart) > maxSecretUnits {
		return invalid("restart", "%d units, at most %d", len(s.Restart), maxSecretUnits)
	}
	for i, u := range s.Restart {
		if err := ValidUnit(u); err != nil {
			return field(fmt.Sprintf("restart[%d]", i), err)
		}
	}
	return keyID(s.KeyID)
}

// ValidSecretPath reports whether p is an absolute, clean path of at most
// 1024 bytes without control characters ("/run/lab-secrets/db-password").
func ValidSecretPath(p string) error {
	switch {
	case len(p) > maxSecretPath:
		return fmt.Errorf("%w: path of %d bytes, at most %d", ErrInvalidField, len(p), maxSecretPath)
	case !strings.HasPrefix(p, "/") || p == "/":
		return fmt.Errorf("%w: path %q is not an absolute file path", ErrInvalidField, p)
	case path.Clean(p) != p:
		return fmt.Errorf("%w: path %q is not clean (want %q)", ErrInvalidField, p, path.Clean(p))
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x20 || p[i] == 0x7f {
			return fmt.Errorf("%w: path %q has a control character", ErrInvalidField, p)
		}
	}
	return nil
}

// validAccount accepts "", a numeric id or a POSIX-ish user or group name.
func validAccount(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > 32 {
		return fmt.Errorf("%w: %q is longer than 32", ErrInvalidField, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || (c == '-' && i > 0)
		if !ok {
			return fmt.Errorf("%w: %q: character %q not in a user or group name", ErrInvalidField, s, c)
		}
	}
	return nil
}

// ValidUnit reports whether u is a systemd unit name that is safe as an
// argument: 1..255 characters of [A-Za-z0-9:_.@\-], not starting with '-'
// (never an option), with a unit type suffix ("nginx.service").
func ValidUnit(u string) error {
	if u == "" || len(u) > 255 || u[0] == '-' || !strings.Contains(u, ".") {
		return fmt.Errorf("%w: unit %q: want a unit name such as nginx.service", ErrInvalidField, u)
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":_.@-\\", c) >= 0) {
			return fmt.Errorf("%w: unit %q: character %q not in a unit name", ErrInvalidField, u, c)
		}
	}
	return nil
}

// Secret states a node reports.
const (
	SecretPresent = "present" // the file holds the reported version
	SecretError   = "error"   // the node could not put the secret in place; Error says why
)

// SecretState is how a node reports one secret in its status: never the
// content.
type SecretState struct {
	Name    string `msgpack:"name" json:"name"`
	Version uint64 `msgpack:"version" json:"version"` // of the file in place (0: none yet)
	State   string `msgpack:"state" json:"state"`     // present | error
	Path    string `msgpack:"path" json:"path,omitempty"`
	Error   string `msgpack:"error" json:"error,omitempty"`
	At      int64  `msgpack:"at" json:"at"` // Unix ms, of the last change
}

func validSecretStates(list []SecretState) error {
	if len(list) > MaxReportedSecrets {
		return invalid("secrets", "%d entries, at most %d", len(list), MaxReportedSecrets)
	}
	for i, s := range list {
		name := fmt.Sprintf("secrets[%d]", i)
		switch {
		case ValidID(s.Name) != nil:
			return field(name+".name", ValidID(s.Name))
		case s.State != SecretPresent && s.State != SecretError:
			return invalid(name+".state", "%q, want present or error", s.State)
		case len(s.Error) > maxSecretError:
			return invalid(name+".error", "%d bytes, at most %d", len(s.Error), maxSecretError)
		case s.At < 0:
			return invalid(name+".at", "negative")
		}
		if s.Path != "" {
			if err := ValidSecretPath(s.Path); err != nil {
				return field(name+".path", err)
			}
		}
	}
	return nil
}

// ValidRecipient checks the form of a node's age recipient: "age1" and
// lower-case bech32, or "ssh-ed25519 " and base64 (no comment). The key
// itself is parsed by whoever encrypts to it.
func ValidRecipient(r string) error {
	if len(r) > maxRecipient {
		return fmt.Errorf("%w: recipient of %d bytes, at most %d", ErrInvalidField, len(r), maxRecipient)
	}
	if rest, ok := strings.CutPrefix(r, "age1"); ok && rest != "" {
		for i := 0; i < len(rest); i++ {
			if c := rest[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
				return fmt.Errorf("%w: recipient %q: character %q is not bech32", ErrInvalidField, r, c)
			}
		}
		return nil
	}
	if rest, ok := strings.CutPrefix(r, "ssh-ed25519 "); ok && rest != "" {
		for i := 0; i < len(rest); i++ {
			if c := rest[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
				return fmt.Errorf("%w: recipient %q: character %q is not base64", ErrInvalidField, r, c)
			}
		}
		return nil
	}
	return fmt.Errorf("%w: recipient %q: want age1… or ssh-ed25519 AAAA…", ErrInvalidField, r)
}
