package proto

import (
	"fmt"
	"slices"
	"strings"
)

// MaxHostKeys bounds NodeStatus.HostKeys; maxHostKey bounds one key
// (an RSA key of 8192 bits is about 1,400 bytes).
const (
	MaxHostKeys = 8
	maxHostKey  = 2048
)

// HostKeyTypes are the SSH host key types a status may report, in the
// order of preference known_hosts tooling uses (ed25519 first).
var HostKeyTypes = []string{
	"ssh-ed25519",
	"ecdsa-sha2-nistp256",
	"ecdsa-sha2-nistp384",
	"ecdsa-sha2-nistp521",
	"sk-ssh-ed25519@openssh.com",
	"sk-ecdsa-sha2-nistp256@openssh.com",
	"ssh-rsa",
}

// ValidHostKey checks one SSH host public key as a status carries it:
// "<type> <base64>", a known type, no comment.
func ValidHostKey(k string) error {
	if len(k) > maxHostKey {
		return fmt.Errorf("%w: host key of %d bytes, at most %d", ErrInvalidField, len(k), maxHostKey)
	}
	typ, data, ok := strings.Cut(k, " ")
	if !ok || data == "" {
		return fmt.Errorf("%w: host key %.40q: want \"<type> <base64>\"", ErrInvalidField, k)
	}
	if !slices.Contains(HostKeyTypes, typ) {
		return fmt.Errorf("%w: host key type %.40q: want one of %s", ErrInvalidField, typ, strings.Join(HostKeyTypes, ", "))
	}
	for i := 0; i < len(data); i++ {
		if c := data[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			return fmt.Errorf("%w: host key %.40q: character %q is not base64", ErrInvalidField, k, c)
		}
	}
	return nil
}

// HostKeyType is the type of a valid host key ("ssh-ed25519").
func HostKeyType(k string) string {
	typ, _, _ := strings.Cut(k, " ")
	return typ
}

func validHostKeys(keys []string) error {
	if len(keys) > MaxHostKeys {
		return invalid("host_keys", "%d entries, at most %d", len(keys), MaxHostKeys)
	}
	for _, k := range keys {
		if err := ValidHostKey(k); err != nil {
			return field("host_keys", err)
		}
	}
	return nil
}
