package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeyGenerateRefusesToOverwrite: a second generate onto the same file
// is a usage error that names the file and --force, and keeps the key.
func TestKeyGenerateRefusesToOverwrite(t *testing.T) {
	out := filepath.Join(t.TempDir(), "operator.key")
	if code, _, errOut := labctl(t, "key", "generate", "--out", out); code != 0 {
		t.Fatalf("generate: exit %d\n%s", code, errOut)
	}
	before, _ := os.ReadFile(out)
	code, _, errOut := labctl(t, "key", "generate", "--out", out)
	if code != exitUsage || !strings.Contains(errOut, out+" exists") || !strings.Contains(errOut, "--force") {
		t.Errorf("exit %d, stderr %q; want exit 2 naming the file and --force", code, errOut)
	}
	if after, _ := os.ReadFile(out); string(after) != string(before) {
		t.Error("the key was overwritten")
	}
	if code, _, errOut := labctl(t, "key", "generate", "--out", out, "--force"); code != 0 {
		t.Errorf("--force: exit %d\n%s", code, errOut)
	}
}

// TestPublicKeyAsSecretKey: a public key where the secret key belongs
// (--key, key public) is called a public key.
func TestPublicKeyAsSecretKey(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "operator.key")
	code, pub, errOut := labctl(t, "key", "generate", "--id", "operator-2026", "--out", secret)
	if code != 0 {
		t.Fatalf("generate: exit %d\n%s", code, errOut)
	}
	pubFile := writeFile(t, "operator.pub", pub)
	for _, args := range [][]string{
		{"key", "public", pubFile},
		{"publish", "--key", pubFile, "--on", "n1", "--toplevel", "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x", "--broker", "mqtt://127.0.0.1:1"},
	} {
		code, _, errOut := labctl(t, args...)
		if code == 0 || !strings.Contains(errOut, `holds the public key "operator-2026"`) || !strings.Contains(errOut, "key generate --out") {
			t.Errorf("%v: exit %d, stderr %q; want a failure saying it is the public key", args, code, errOut)
		}
	}
}
