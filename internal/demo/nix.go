package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	nixfiles "github.com/lab-fleet/lab/nix"
	"github.com/lab-fleet/lab/proto"
)

// ErrNoNix is returned when the Nix tools the demo needs are missing.
var ErrNoNix = errors.New(`labctl demo needs Nix to build and switch real (fake) NixOS systems:
nix-build, nix-store and nix-env were not found on $PATH.
On Debian or Ubuntu, as root:   apt-get update && apt-get install -y nix-bin
On NixOS they are already there; elsewhere see https://nixos.org/download`)

// checkNix reports ErrNoNix unless every Nix tool the demo uses is on PATH.
func checkNix() error {
	for _, tool := range []string{"nix-build", "nix-store", "nix-env"} {
		if _, err := exec.LookPath(tool); err != nil {
			return ErrNoNix
		}
	}
	return nil
}

// nixEnv is the environment every Nix process of the demo gets: no binary
// cache (nothing is downloaded: the systems are built locally), and caches
// kept inside the demo directory so the user's own are untouched.
func nixEnv(dir string) []string {
	return []string{
		"NIX_CONFIG=substituters =\nexperimental-features = nix-command flakes\nnarinfo-cache-negative-ttl = 0",
		"XDG_CACHE_HOME=" + filepath.Join(dir, "cache"),
		"HOME=" + filepath.Join(dir, "home"),
	}
}

// system describes one fake system to build.
type system struct {
	Name       string
	Gen        int
	FailHealth bool
}

// buildSystems builds every system with ONE nix-build call and returns the
// store paths in order.
func buildSystems(ctx context.Context, dir string, env []string, systems []system) ([]string, error) {
	nixFile := filepath.Join(dir, "fake-system.nix")
	if err := os.WriteFile(nixFile, nixfiles.FakeSystem, 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", nixFile, err)
	}
	var expr strings.Builder
	expr.WriteString("let f = import " + nixFile + "; in [")
	for _, s := range systems {
		fmt.Fprintf(&expr, ` (f { name = %q; gen = %d; failHealth = %t; })`, s.Name, s.Gen, s.FailHealth)
	}
	expr.WriteString(" ]")
	cmd := exec.CommandContext(ctx, "nix-build", "--no-out-link", "-E", expr.String())
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("nix-build: %w\n%s", err, lastLines(stderr.String(), 15))
	}
	paths := strings.Fields(string(out))
	if len(paths) != len(systems) {
		return nil, fmt.Errorf("nix-build printed %d paths for %d systems", len(paths), len(systems))
	}
	for _, p := range paths {
		if err := proto.ValidStorePath(p); err != nil {
			return nil, fmt.Errorf("nix-build output: %w", err)
		}
	}
	return paths, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
