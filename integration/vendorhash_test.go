package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var vendorHashRe = regexp.MustCompile(`(?m)^\s*vendorHash = "(sha256-[A-Za-z0-9+/]{43}=)";`)

// flake.nix's vendorHash is what buildGoModule will find: its goModules
// derivation runs `go mod vendor` in the flake's source (the tracked files)
// and copies vendor/, modules.txt included, to a fixed output hashed
// recursively, i.e. `nix hash path vendor`. A go.mod or go.sum change
// without a new hash fails here instead of in the first `nix build`. The
// recipe in docs/nixos.md ("Updating vendorHash") must print the same hash,
// as pasted, on Debian's Nix 2.8 (nix-command off by default).
func TestVendorHashMatchesFlake(t *testing.T) {
	requireTools(t, "nix", "go")
	m := vendorHashRe.FindStringSubmatch(readRepoFile(t, "flake.nix"))
	if m == nil {
		t.Fatalf("flake.nix has no line `vendorHash = \"sha256-...\";`")
	}
	committed := m[1]

	src := copyRepo(t)
	if _, err := os.Stat(filepath.Join(src, "vendor")); err == nil {
		t.Fatal("the repository tracks a vendor/ directory: buildGoModule refuses it (vendorHash = null would be needed)")
	}
	home := t.TempDir()
	env := append(goEnv(t), "HOME="+home, "XDG_CACHE_HOME="+filepath.Join(home, "cache"), "NIX_CONFIG=", "TMPDIR="+t.TempDir())

	// What buildGoModule does, step by step.
	runIn(t, src, env, "go", "mod", "vendor")
	got := strings.TrimSpace(runIn(t, src, env, "nix", "--extra-experimental-features", "nix-command", "hash", "path", "vendor"))
	if got != committed {
		t.Errorf("flake.nix has vendorHash = %q, but `go mod vendor` + `nix hash path vendor` gives %q: put the new one in flake.nix (docs/nixos.md, \"Updating vendorHash\")", committed, got)
	}

	// The documented recipe, as pasted, in a clean copy.
	recipe := docBlock(t, "docs/nixos.md", "vendorhash")
	clean := copyRepo(t)
	out := strings.TrimSpace(runIn(t, clean, env, "bash", "-e", "-c", recipe))
	lines := strings.Split(out, "\n")
	if last := lines[len(lines)-1]; last != got {
		t.Errorf("the recipe of docs/nixos.md printed\n%s\nwant its last line to be %q", out, got)
	}
	if _, err := os.Stat(filepath.Join(clean, "vendor")); err == nil {
		t.Error("the recipe of docs/nixos.md leaves a vendor/ directory in the work tree (it changes what go build uses)")
	}
}

func readRepoFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
