package nixsys

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	nixfiles "github.com/lab-fleet/lab/nix"
)

// starterEnv makes the test binary a "labd" that starts an activation
// and is then SIGKILLed (TestDetachedActivationSurvivesParent).
const starterEnv = "NIXSYS_TEST_STARTER"

func TestMain(m *testing.M) {
	MaybeRunHelper()
	if os.Getenv(starterEnv) == "1" {
		os.Exit(runStarter())
	}
	code := m.Run()
	if fixDir != "" {
		_ = os.RemoveAll(fixDir)
	}
	os.Exit(code)
}

// runStarter starts the activation described by its environment, prints
// the helper's pid and kills itself as a crash would.
func runStarter() int {
	n, err := New(Config{Profile: os.Getenv("NIXSYS_TEST_PROFILE"), Detach: DetachSetsid})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	a, err := n.StartActivation(context.Background(), os.Getenv("NIXSYS_TEST_TOPLEVEL"), "switch", os.Getenv("NIXSYS_TEST_RUNDIR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(a.Pid)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	return 3 // not reached
}

// systems are the fake NixOS toplevels built once per test binary.
type systems struct {
	Gen1, Gen2 string // healthy systems
	Fail       string // switch-to-configuration fails ("baked failure")
	Slow       string // switch-to-configuration sleeps 2 s
}

var (
	fixOnce sync.Once
	fixDir  string
	fix     systems
	fixErr  error
)

// nixConfig is the NIX_CONFIG of every Nix call in tests: no substituter
// (nothing to download), no build users, nix-command enabled.
const nixConfig = "build-users-group =\nsubstituters =\nexperimental-features = nix-command flakes"

// nixEnv is the environment for Nix in tests, with caches under dir.
func nixEnv(dir string) []string {
	return []string{"NIX_CONFIG=" + nixConfig, "HOME=" + dir, "XDG_CACHE_HOME=" + filepath.Join(dir, "cache")}
}

// requireNix skips the test loudly when Nix is not installed.
func requireNix(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"nix-build", "nix-store", "nix-env"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: install nix-bin (apt-get install -y nix-bin)", tool)
		}
	}
}

// buildSystems builds the fake systems of nix/fake-system.nix with one
// nix-build call, once per test binary.
func buildSystems(t *testing.T) systems {
	t.Helper()
	requireNix(t)
	fixOnce.Do(func() {
		fixDir, fixErr = os.MkdirTemp("", "nixsys-test-")
		if fixErr != nil {
			return
		}
		nixFile := filepath.Join(fixDir, "fake-system.nix")
		if fixErr = os.WriteFile(nixFile, nixfiles.FakeSystem, 0o644); fixErr != nil {
			return
		}
		expr := `let f = import ` + nixFile + `; in [
			(f { name = "nixsys"; gen = 1; })
			(f { name = "nixsys"; gen = 2; })
			(f { name = "nixsys"; gen = 3; failSwitch = true; })
			(f { name = "nixsys"; gen = 4; sleepSwitch = 2; })
		]`
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "nix-build", "--no-out-link", "-E", expr)
		cmd.Env = append(os.Environ(), nixEnv(fixDir)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			fixErr = fmt.Errorf("nix-build: %w\n%s", err, stderr.String())
			return
		}
		paths := strings.Fields(string(out))
		if len(paths) != 4 {
			fixErr = fmt.Errorf("nix-build printed %q, want 4 paths", out)
			return
		}
		fix = systems{Gen1: paths[0], Gen2: paths[1], Fail: paths[2], Slow: paths[3]}
	})
	if fixErr != nil {
		t.Fatal(fixErr)
	}
	return fix
}

// newTestNix returns a Nix with its profile, caches and switch log in a
// temporary directory, and the path of that switch log.
func newTestNix(t *testing.T, cfg Config) (*Nix, string) {
	t.Helper()
	dir := t.TempDir()
	switchLog := filepath.Join(dir, "switch.log")
	if cfg.Profile == "" {
		cfg.Profile = filepath.Join(dir, "profiles", "system")
	}
	if cfg.BootedLink == "" {
		cfg.BootedLink = filepath.Join(dir, "booted-system")
	}
	if cfg.Detach == "" {
		cfg.Detach = DetachSetsid
	}
	cfg.Env = append(append(nixEnv(dir), "FAKE_NIXOS_LOG="+switchLog), cfg.Env...)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n, switchLog
}

// readLines returns the lines of a file, nil if it is missing.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.FieldsFunc(string(b), func(r rune) bool { return r == '\n' })
}
