package flake

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	nixfiles "github.com/lab-fleet/lab/nix"
)

// testFlake writes a flake with no inputs whose nixosConfigurations are
// plain attrsets shaped like NixOS ones: config.lab.machine and a
// config.system.build.toplevel that is a /bin/sh derivation. Machines
// m00..m(n-1) are in group "even" or "odd"; "broken" throws.
func testFlake(t *testing.T, n int) string { return benchFlake(t, n) }

func benchFlake(t testing.TB, n int) string {
	t.Helper()
	if _, err := exec.LookPath("nix"); err != nil {
		t.Skip("SKIPPED: nix not found; install nix-bin (scripts/test does)")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fake-system.nix"), nixfiles.FakeSystem, 0o644); err != nil {
		t.Fatal(err)
	}
	flake := fmt.Sprintf(`{
  outputs = { self }: let
    system = "x86_64-linux";
    machine = name: meta: {
      config = {
        lab.machine = meta;
        system.build.toplevel = import ./fake-system.nix { inherit name system; gen = 2; };
      };
    };
    name = i: "m" + (if i < 10 then "00" else if i < 100 then "0" else "") + toString i;
    fleet = builtins.listToAttrs (builtins.genList (i: {
      name = name i;
      value = machine (name i) {
        role = "web";
        groups = [ (if builtins.bitAnd i 1 == 0 then "even" else "odd") ];
        rebootOrder = i;
        dependencies = if i > 0 && builtins.bitAnd i 1 == 1 then [ (name (i - 1)) ] else [];
        orchestration = { rebootDelay = "5s"; criticalityLevel = "normal"; };
      };
    }) %d);
  in {
    nixosConfigurations = fleet // {
      broken = { config = { lab.machine = {}; system.build.toplevel = throw "broken's disk layout is wrong"; }; };
    };
  };
}
`, n)
	if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(flake), 0o644); err != nil {
		t.Fatal(err)
	}
	return "path:" + dir
}

// counting wraps the real runner and counts nix invocations by subcommand.
type counting struct {
	mu    sync.Mutex
	calls map[string]int
}

func (c *counting) run(ctx context.Context, name string, args, env []string) ([]byte, []byte, error) {
	c.mu.Lock()
	c.calls[args[len(features)]]++
	c.mu.Unlock()
	return execRun(ctx, name, args, env)
}

func testNix(t *testing.T) (Nix, *counting) { return testNixB(t) }

func testNixB(t testing.TB) (Nix, *counting) {
	home := t.TempDir()
	c := &counting{calls: map[string]int{}}
	return Nix{Run: c.run, Env: []string{"NIX_CONFIG=substituters =", "HOME=" + home, "XDG_CACHE_HOME=" + filepath.Join(home, "cache")}}, c
}

func TestInventoryIsOneEvaluation(t *testing.T) {
	ref := testFlake(t, 50)
	n, calls := testNix(t)
	ms, took, err := n.Inventory(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("evaluated %d machines in one nix eval: %s", len(ms), took)
	if len(ms) != 51 {
		t.Fatalf("%d machines, want 51", len(ms))
	}
	// One evaluation for the fleet, one more only for the broken machine's message.
	if calls.calls["eval"] != 2 {
		t.Errorf("%d nix eval calls, want 2", calls.calls["eval"])
	}
	byName := map[string]Machine{}
	for _, m := range ms {
		byName[m.Name] = m
	}
	m3 := byName["m003"]
	if m3.Role != "web" || len(m3.Groups) != 1 || m3.Groups[0] != "odd" || m3.RebootOrder != 3 || m3.Dependencies[0] != "m002" ||
		m3.RebootDelay != "5s" || m3.Criticality != "normal" || !strings.HasSuffix(m3.Toplevel, "-nixos-system-m003-2") || m3.Error != "" {
		t.Errorf("m03: %+v", m3)
	}
	if b := byName["broken"]; b.Toplevel != "" || !strings.Contains(b.Error, "broken's disk layout is wrong") {
		t.Errorf("broken: %+v", b)
	}
}

func TestBuildAndCopy(t *testing.T) {
	ref := testFlake(t, 4)
	n, calls := testNix(t)
	ms, _, err := n.Inventory(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	var pick []Machine
	for _, m := range ms {
		if m.Name == "m001" || m.Name == "m002" {
			pick = append(pick, m)
		}
	}
	built, err := n.Build(context.Background(), ref, pick)
	if err != nil {
		t.Fatal(err)
	}
	if calls.calls["build"] != 1 || len(built) != 2 || built["m001"] != pick[0].Toplevel {
		t.Fatalf("built %v with %d calls", built, calls.calls["build"])
	}
	if _, err := os.Stat(filepath.Join(built["m002"], "bin", "switch-to-configuration")); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	if err := n.Copy(context.Background(), "file://"+cache, []string{built["m001"], built["m002"]}); err != nil {
		t.Fatal(err)
	}
	narinfos, _ := filepath.Glob(filepath.Join(cache, "*.narinfo"))
	if len(narinfos) < 2 {
		t.Errorf("cache holds %d narinfos", len(narinfos))
	}
}

func TestEvaluationErrorsAreNixs(t *testing.T) {
	ref := testFlake(t, 1)
	n, _ := testNix(t)
	_, _, err := n.Inventory(context.Background(), ref+"-missing")
	if err == nil || !strings.Contains(err.Error(), "nix eval") || !strings.Contains(err.Error(), "error: ") {
		t.Fatalf("err = %v", err)
	}
	t.Logf("as printed:\n%v", err)
}
