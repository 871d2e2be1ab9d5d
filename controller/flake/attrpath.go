package flake

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultConfigurations is the attribute of a flake whose entries are the
// fleet's machines.
const DefaultConfigurations = "nixosConfigurations"

// ErrAttrPath wraps an attribute path that ParseAttrPath refuses.
var ErrAttrPath = errors.New("invalid attribute path")

// ParseAttrPath checks a dot-separated attribute path as an operator
// writes it — `clan.nixosConfigurations`, `legacyPackages.x86_64-linux.fleet`,
// `fleets."lab one".machines` — and returns it in the form given to Nix:
// identifiers as they are, every other name double-quoted. A component is
// a Nix identifier ([A-Za-z_][A-Za-z0-9_'-]*) or a quoted name of
// printable characters without ", \ or $, so that no text of the
// operator's ever becomes Nix syntax.
func ParseAttrPath(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("%w: empty (default %s)", ErrAttrPath, DefaultConfigurations)
	}
	if len(s) > 256 {
		return "", fmt.Errorf("%w: %d bytes, at most 256", ErrAttrPath, len(s))
	}
	var parts []string
	rest := s
	for {
		var part string
		if strings.HasPrefix(rest, `"`) {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				return "", fmt.Errorf("%w: %q: unterminated quote", ErrAttrPath, s)
			}
			name := rest[1 : 1+end]
			if name == "" {
				return "", fmt.Errorf("%w: %q: empty quoted name", ErrAttrPath, s)
			}
			for _, c := range name {
				if c < 0x20 || c == 0x7f || c == '\\' || c == '$' {
					return "", fmt.Errorf("%w: %q: character %q is not allowed in a quoted name", ErrAttrPath, s, c)
				}
			}
			part, rest = `"`+name+`"`, rest[2+end:]
			if isIdent(name) {
				part = name
			}
		} else {
			end := strings.IndexByte(rest, '.')
			if end < 0 {
				end = len(rest)
			}
			part, rest = rest[:end], rest[end:]
			if !isIdent(part) {
				return "", fmt.Errorf("%w: %q: %q is not a Nix identifier (quote other names: a.\"b c\")", ErrAttrPath, s, part)
			}
		}
		parts = append(parts, part)
		if rest == "" {
			return strings.Join(parts, "."), nil
		}
		if rest[0] != '.' || len(rest) == 1 {
			return "", fmt.Errorf("%w: %q: want names separated by single dots", ErrAttrPath, s)
		}
		rest = rest[1:]
	}
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '\'' || c == '-')) {
			return false
		}
	}
	return true
}
