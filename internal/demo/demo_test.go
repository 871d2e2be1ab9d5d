package demo

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/node/nixsys"
)

// The demo's nodes start detached activation helpers from this binary.
func TestMain(m *testing.M) {
	nixsys.MaybeRunHelper()
	os.Exit(m.Run())
}

func TestDemoRollsOutAndOneNodeRollsBack(t *testing.T) {
	if checkNix() != nil {
		t.Skip("SKIPPED: nix-build not found; install nix-bin (scripts/test does)")
	}
	var out bytes.Buffer
	dir := t.TempDir()
	err := Run(context.Background(), Options{Nodes: 4, Dir: dir, Keep: true, Timeout: 2 * time.Minute, Out: &out})
	t.Log(out.String())
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	// The story names every node and the rollback, and each node's own
	// switch log shows what happened to it.
	for _, want := range []string{"n1", "n4", "succeeded", "rolled-back", "switched back by itself",
		"4 machines: 4 online, 0 offline; 1 rolled-back, 3 succeeded; 1 needs attention", "attention: n4: rolled back"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		b, err := os.ReadFile(filepath.Join(dir, "nodes", n, "switch.log"))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		want := 1
		if n == "n4" {
			want = 2 // the new system, then the previous one again
		}
		if len(lines) != want {
			t.Errorf("%s switched %d times, want %d: %q", n, len(lines), want, lines)
		}
		cur, err := filepath.EvalSymlinks(filepath.Join(dir, "nodes", n, "profiles", "system"))
		if err != nil {
			t.Fatal(err)
		}
		gen := "-2"
		if n == "n4" {
			gen = "-1"
		}
		if !strings.HasSuffix(cur, "-nixos-system-"+n+gen) {
			t.Errorf("%s runs %s, want generation %s", n, cur, gen[1:])
		}
	}
}

func TestDemoRemovesItsDirectory(t *testing.T) {
	if checkNix() != nil {
		t.Skip("SKIPPED: nix-build not found; install nix-bin (scripts/test does)")
	}
	dir := filepath.Join(t.TempDir(), "demo")
	var out bytes.Buffer
	if err := Run(context.Background(), Options{Nodes: 2, Dir: dir, Out: &out}); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("work directory left behind: %v", err)
	}
}
