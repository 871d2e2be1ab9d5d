package proto

import (
	"errors"
	"strings"
	"testing"
)

func validSecret() *Secret {
	s := &Secret{Envelope: env("x1"), Node: "n1", Name: "db", Version: 1, Ciphertext: []byte("age"), Path: "/run/lab-secrets/db",
		Owner: "postgres", Group: "1000", Mode: 0o440, Restart: []string{"postgresql.service", "getty@tty1.service"}}
	s.V, s.Kind = Version, KindSecret
	return s
}

func TestSecretValidate(t *testing.T) {
	if err := validSecret().Validate(); err != nil {
		t.Fatalf("valid secret: %v", err)
	}
	for name, mut := range map[string]func(*Secret){
		"no node":          func(s *Secret) { s.Node = "" },
		"bad name":         func(s *Secret) { s.Name = "../etc" },
		"version 0":        func(s *Secret) { s.Version = 0 },
		"no ciphertext":    func(s *Secret) { s.Ciphertext = nil },
		"huge ciphertext":  func(s *Secret) { s.Ciphertext = make([]byte, MaxSecretContent+1) },
		"relative path":    func(s *Secret) { s.Path = "run/x" },
		"dotdot path":      func(s *Secret) { s.Path = "/run/lab-secrets/../../etc/shadow" },
		"root path":        func(s *Secret) { s.Path = "/" },
		"newline in path":  func(s *Secret) { s.Path = "/run/x\ny" },
		"setuid mode":      func(s *Secret) { s.Mode = 0o4755 },
		"owner option":     func(s *Secret) { s.Owner = "-x" },
		"owner with colon": func(s *Secret) { s.Owner = "a:b" },
		"unit option":      func(s *Secret) { s.Restart = []string{"--force"} },
		"unit no suffix":   func(s *Secret) { s.Restart = []string{"nginx"} },
		"unit space":       func(s *Secret) { s.Restart = []string{"a b.service"} },
		"too many units":   func(s *Secret) { s.Restart = make([]string, 17) },
		"negative expiry":  func(s *Secret) { s.Expires = -1 },
		"bad key id":       func(s *Secret) { s.KeyID = "a b" },
	} {
		s := validSecret()
		mut(s)
		if err := s.Validate(); !errors.Is(err, ErrInvalidField) {
			t.Errorf("%s: Validate = %v, want ErrInvalidField", name, err)
		}
	}
}

func TestSecretSignVerify(t *testing.T) {
	s := validSecret()
	must(Sign(s, fixtureKey))
	kr := Keyring{fixtureKey.ID: fixtureKey.Public().Key}
	if err := kr.Verify(s); err != nil {
		t.Fatal(err)
	}
	s.Ciphertext = []byte("other")
	if err := kr.Verify(s); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered ciphertext: %v", err)
	}
}

func TestStatusSecretsValidate(t *testing.T) {
	for _, r := range []string{"age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA+/="} {
		if err := ValidRecipient(r); err != nil {
			t.Errorf("%q: %v", r, err)
		}
	}
	for _, r := range []string{"age1", "age1ABC", "ssh-rsa AAAA", "ssh-ed25519 AAAA comment", "x", strings.Repeat("a", 300)} {
		if err := ValidRecipient(r); !errors.Is(err, ErrInvalidField) {
			t.Errorf("%q accepted", r)
		}
	}
	s := &NodeStatus{Envelope: env("s"), Node: "n1"}
	s.V, s.Kind = Version, KindStatus
	s.Secrets = []SecretState{{Name: "db", State: "leaked"}}
	if err := s.Validate(); !errors.Is(err, ErrInvalidField) {
		t.Errorf("unknown secret state accepted: %v", err)
	}
	s.Secrets = []SecretState{{Name: "db", State: SecretError, Error: strings.Repeat("e", 600)}}
	if err := s.Validate(); !errors.Is(err, ErrInvalidField) {
		t.Errorf("long secret error accepted: %v", err)
	}
	s.Secrets = make([]SecretState, MaxReportedSecrets+1)
	if err := s.Validate(); !errors.Is(err, ErrInvalidField) {
		t.Errorf("too many secrets accepted: %v", err)
	}
}
