package flake

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	nixfiles "github.com/lab-fleet/lab/nix"
)

func TestParseAttrPath(t *testing.T) {
	for in, want := range map[string]string{
		"nixosConfigurations":               "nixosConfigurations",
		"clan.nixosConfigurations":          "clan.nixosConfigurations",
		"legacyPackages.x86_64-linux.fleet": "legacyPackages.x86_64-linux.fleet",
		`fleets."lab one".machines`:         `fleets."lab one".machines`,
		`"nixosConfigurations"`:             "nixosConfigurations",
		`a."b.c"`:                           `a."b.c"`,
		"it's":                              "it's",
	} {
		got, err := ParseAttrPath(in)
		if err != nil || got != want {
			t.Errorf("ParseAttrPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", ".", "a.", ".a", "a..b", "1a", "a b", `a."b`, `a.""`, `a."${x}"`, `a."b\"`, `a."b"c`,
		"a#b", "a;b", `nixosConfigurations --apply "x"`, "a.${b}", "a.\"b\nc\"", "a/b"} {
		if got, err := ParseAttrPath(in); !errors.Is(err, ErrAttrPath) {
			t.Errorf("ParseAttrPath(%q) = %q, %v; want ErrAttrPath", in, got, err)
		}
	}
}

// A fleet under another attribute path, with a quoted name in it
// (a cluster layer's output): inventory, a broken machine's message and
// the build all go there; nixosConfigurations does not exist at all.
func TestInventoryAtAttrPath(t *testing.T) {
	if _, err := exec.LookPath("nix"); err != nil {
		t.Skip("SKIPPED: nix not found; install nix-bin (scripts/test does)")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fake-system.nix"), nixfiles.FakeSystem, 0o644); err != nil {
		t.Fatal(err)
	}
	flake := `{
  outputs = { self }: let
    machine = name: { config = { lab.machine = { role = "db"; groups = [ "lab" ]; };
      system.build.toplevel = import ./fake-system.nix { inherit name; system = "x86_64-linux"; gen = 1; }; }; };
  in {
    fleets."lab one" = {
      db1 = machine "db1";
      broken = { config = { lab.machine = {}; system.build.toplevel = throw "db2 lost its disk"; }; };
    };
  };
}
`
	if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(flake), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := "path:" + dir
	n, calls := testNix(t)
	if _, _, err := n.Inventory(context.Background(), ref); err == nil || !strings.Contains(err.Error(), "#nixosConfigurations") {
		t.Fatalf("default attribute path on a flake without it: %v", err)
	}
	n.Configurations = `fleets."lab one"`
	ms, _, err := n.Inventory(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Name != "broken" || !strings.Contains(ms[0].Error, "db2 lost its disk") ||
		ms[1].Name != "db1" || ms[1].Role != "db" || !strings.HasSuffix(ms[1].Toplevel, "-nixos-system-db1-1") {
		t.Fatalf("machines: %+v", ms)
	}
	built, err := n.Build(context.Background(), ref, ms[1:])
	if err != nil || built["db1"] != ms[1].Toplevel {
		t.Fatalf("build: %v %v", built, err)
	}
	before := calls.calls["eval"]
	n.Configurations = `fleets."lab one" --impure`
	if _, _, err := n.Inventory(context.Background(), ref); !errors.Is(err, ErrAttrPath) || calls.calls["eval"] != before {
		t.Fatalf("bad attribute path: %v (nix ran: %v)", err, calls.calls["eval"] != before)
	}
	if _, err := n.Build(context.Background(), ref, ms[1:]); !errors.Is(err, ErrAttrPath) {
		t.Fatalf("build with a bad attribute path: %v", err)
	}
}
