package proto

import (
	"fmt"
	"strings"
)

// MaxIDLen is the longest node, group or rollout identifier.
const MaxIDLen = 63

// ValidID reports whether s is a valid node, group or rollout identifier:
// 1 to 63 characters of [a-z0-9-]. Identifiers become topic levels, so this
// also keeps MQTT wildcards and separators out of topics.
func ValidID(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty identifier", ErrInvalidField)
	}
	if len(s) > MaxIDLen {
		return fmt.Errorf("%w: identifier %.20q… is %d characters, at most %d", ErrInvalidField, s, len(s), MaxIDLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%w: identifier %q: character %q not in [a-z0-9-]", ErrInvalidField, s, c)
		}
	}
	return nil
}

// StoreDir is the Nix store every toplevel must live in.
const StoreDir = "/nix/store/"

const (
	nixBase32   = "0123456789abcdfghijklmnpqrsvwxyz"
	hashLen     = 32
	maxNameLen  = 211
	nameSymbols = "+-._?="
)

// ValidStorePath reports whether p is a Nix store path:
// /nix/store/<32 nix-base32 characters>-<name>, with nothing after the name.
func ValidStorePath(p string) error {
	rest, ok := strings.CutPrefix(p, StoreDir)
	if !ok {
		return fmt.Errorf("%w: store path %q does not start with %s", ErrInvalidField, p, StoreDir)
	}
	if len(rest) < hashLen+2 || rest[hashLen] != '-' {
		return fmt.Errorf("%w: store path %q: want %s<32-char hash>-<name>", ErrInvalidField, p, StoreDir)
	}
	for i := 0; i < hashLen; i++ {
		if strings.IndexByte(nixBase32, rest[i]) < 0 {
			return fmt.Errorf("%w: store path %q: hash character %q is not nix-base32", ErrInvalidField, p, rest[i])
		}
	}
	name := rest[hashLen+1:]
	if len(name) > maxNameLen {
		return fmt.Errorf("%w: store path %q: name longer than %d", ErrInvalidField, p, maxNameLen)
	}
	if name[0] == '.' {
		return fmt.Errorf("%w: store path %q: name starts with '.'", ErrInvalidField, p)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(nameSymbols, c) >= 0) {
			return fmt.Errorf("%w: store path %q: character %q not allowed in a store name", ErrInvalidField, p, c)
		}
	}
	return nil
}

// field wraps err so that it names the field it is about.
func field(name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", name, err)
}

// invalid returns an ErrInvalidField error for a field.
func invalid(name, format string, args ...any) error {
	return fmt.Errorf("%s: %w: %s", name, ErrInvalidField, fmt.Sprintf(format, args...))
}
