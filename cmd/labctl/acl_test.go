package main

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// aclFixture writes an identities file with a node and a viewer, and their
// password files in dir/secrets, as labctl node add --out secrets does.
func aclFixture(t *testing.T) (dir, identities string) {
	t.Helper()
	dir = t.TempDir()
	identities = filepath.Join(dir, "identities.yaml")
	for _, args := range [][]string{
		{"node", "add", "web", "--groups", "servers", "--identities", identities, "--out", filepath.Join(dir, "secrets")},
		{"node", "add", "grafana", "--role", "viewer", "--identities", identities, "--out", filepath.Join(dir, "secrets")},
	} {
		if err := os.MkdirAll(filepath.Join(dir, "secrets"), 0o700); err != nil {
			t.Fatal(err)
		}
		if code, out, errOut := labctl(t, args...); code != 0 {
			t.Fatalf("labctl %v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	return dir, identities
}

// passwd holds password hashes: labctl writes it 0600 even over a file
// someone made world-readable, and says that mosquitto cannot read a file
// only root may read.
func TestACLExportPasswdIsNeverWorldReadable(t *testing.T) {
	dir, identities := aclFixture(t)
	out := filepath.Join(dir, "mosquitto")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "passwd"), []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(out, "passwd"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := labctl(t, "acl", "export", "--format", "mosquitto", "--identities", identities,
		"--passwords", filepath.Join(dir, "secrets"), "--out", out)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	fi, err := os.Stat(filepath.Join(out, "passwd"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("passwd has mode %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(filepath.Join(out, "passwd"))
	if n := strings.Count(string(b), "$7$"); n != 2 {
		t.Errorf("passwd has %d hashes, want 2:\n%s", n, b)
	}
	if !strings.Contains(stderr, "--owner mosquitto") {
		t.Errorf("without --owner, labctl does not say how mosquitto gets to read passwd:\n%s", stderr)
	}
}

// --owner gives both files to the user mosquitto drops to; passwd stays
// 0600.
func TestACLExportOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: chown needs root; CI runs as root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("SKIPPED: no user nobody: %v", err)
	}
	dir, identities := aclFixture(t)
	out := filepath.Join(dir, "mosquitto")
	code, stdout, stderr := labctl(t, "acl", "export", "--format", "mosquitto", "--identities", identities,
		"--passwords", filepath.Join(dir, "secrets"), "--out", out, "--owner", "nobody")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	for name, perm := range map[string]os.FileMode{"passwd": 0o600, "acl": 0o644} {
		fi, err := os.Stat(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if strconv.Itoa(int(st.Uid)) != u.Uid || strconv.Itoa(int(st.Gid)) != u.Gid {
			t.Errorf("%s is owned by %d:%d, want nobody (%s:%s)", name, st.Uid, st.Gid, u.Uid, u.Gid)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), perm)
		}
	}
	code, _, stderr = labctl(t, "acl", "export", "--format", "mosquitto", "--identities", identities, "--out", out, "--owner", "no-such-user-here")
	if code != 2 || !strings.Contains(stderr, `--owner "no-such-user-here": no such user`) {
		t.Errorf("unknown owner: exit %d, %s", code, stderr)
	}
}

// --passwords pointing where labctl node add did not write (it writes to
// its --out, default .) is an error, not an empty passwd.
func TestACLExportWithoutAnyPasswordFile(t *testing.T) {
	dir, identities := aclFixture(t)
	code, stdout, stderr := labctl(t, "acl", "export", "--format", "mosquitto", "--identities", identities,
		"--passwords", t.TempDir(), "--out", filepath.Join(dir, "mosquitto"))
	if code == 0 || !strings.Contains(stderr, "no NAME.password file for any of the 2 identities") {
		t.Errorf("exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "mosquitto", "passwd")); err == nil {
		t.Error("an empty passwd was written")
	}
}
