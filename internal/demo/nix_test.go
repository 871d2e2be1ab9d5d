package demo

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuildSystemsInOneCall(t *testing.T) {
	if checkNix() != nil {
		t.Skip("SKIPPED: nix-build not found; install nix-bin (scripts/test does)")
	}
	dir := t.TempDir()
	paths, err := buildSystems(context.Background(), dir, nixEnv(dir), []system{
		{Name: "n1", Gen: 1}, {Name: "n1", Gen: 2, FailHealth: true}, {Name: "n2", Gen: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 3 || !strings.HasSuffix(paths[0], "-nixos-system-n1-1") || !strings.HasSuffix(paths[2], "-nixos-system-n2-1") {
		t.Fatalf("paths %v", paths)
	}
	if _, err := os.Stat(filepath.Join(paths[1], "fail-health")); err != nil {
		t.Errorf("gen 2 of n1 lacks the fail-health marker: %v", err)
	}
	if _, err := os.Stat(filepath.Join(paths[0], "fail-health")); err == nil {
		t.Errorf("gen 1 of n1 has the fail-health marker")
	}
	out, err := exec.Command(filepath.Join(paths[0], "bin", "switch-to-configuration"), "test").CombinedOutput()
	if err != nil {
		t.Fatalf("switch-to-configuration: %v %s", err, out)
	}
}

func TestNoNixExplainsWhatIsNeeded(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := checkNix()
	if err != ErrNoNix || !strings.Contains(err.Error(), "apt-get install -y nix-bin") {
		t.Fatalf("got %v", err)
	}
}
