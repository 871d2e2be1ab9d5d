package proto

import (
	"errors"
	"strings"
	"testing"
)

func TestValidHostKey(t *testing.T) {
	for _, k := range []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA+/=", "ssh-rsa AAAAB3NzaC1yc2E=", "ecdsa-sha2-nistp521 AAAA",
		"sk-ssh-ed25519@openssh.com AAAA"} {
		if err := ValidHostKey(k); err != nil {
			t.Errorf("%q: %v", k, err)
		}
	}
	for _, k := range []string{"", "ssh-ed25519", "ssh-ed25519 ", "ssh-dss AAAA", "ssh-ed25519 AAAA root@host", "ssh-ed25519 AAAA\n",
		"ssh-ed25519 AA\"; }; evil = {", "ssh-ed25519 " + strings.Repeat("A", maxHostKey)} {
		if err := ValidHostKey(k); !errors.Is(err, ErrInvalidField) {
			t.Errorf("%.60q accepted", k)
		}
	}
	if HostKeyType("ecdsa-sha2-nistp256 AAAA") != "ecdsa-sha2-nistp256" {
		t.Error("HostKeyType")
	}
}

func TestStatusHostKeysValidate(t *testing.T) {
	s := &NodeStatus{Envelope: env("s"), Node: "n1", HostKeys: []string{"ssh-ed25519 AAAA"}}
	s.V, s.Kind = Version, KindStatus
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	s.HostKeys = []string{"ssh-ed25519 AAAA", "bogus AAAA"}
	if err := s.Validate(); !errors.Is(err, ErrInvalidField) || !strings.Contains(err.Error(), "host_keys") {
		t.Errorf("bad key type: %v", err)
	}
	s.HostKeys = make([]string, MaxHostKeys+1)
	for i := range s.HostKeys {
		s.HostKeys[i] = "ssh-ed25519 AAAA"
	}
	if err := s.Validate(); !errors.Is(err, ErrInvalidField) {
		t.Errorf("too many host keys: %v", err)
	}
}
