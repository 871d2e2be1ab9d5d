package nixsys

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRealiseAndProfile(t *testing.T) {
	sys := buildSystems(t)
	n, _ := newTestNix(t, Config{})
	ctx := context.Background()

	if cur, err := n.Current(); cur != "" || err != nil {
		t.Fatalf("Current before any profile = %q, %v; want \"\", nil", cur, err)
	}
	if gens, err := n.Generations(); len(gens) != 0 || err != nil {
		t.Fatalf("Generations before any profile = %v, %v", gens, err)
	}
	if err := n.Realise(ctx, sys.Gen1); err != nil {
		t.Fatalf("Realise(gen1): %v", err)
	}
	ghost := "/nix/store/00000000000000000000000000000000-nixos-system-ghost-1"
	err := n.Realise(ctx, ghost)
	var exitErr *ExitError
	if !errors.As(err, &exitErr) || !strings.Contains(err.Error(), ghost) || exitErr.Stderr == "" {
		t.Fatalf("Realise(ghost) = %v; want an *ExitError with Nix's stderr", err)
	}
	if err := n.Realise(ctx, "/tmp/not-a-store-path"); err == nil {
		t.Fatal("Realise(non-store path) succeeded")
	}

	for _, p := range []string{sys.Gen1, sys.Gen2} {
		if err := n.SetProfile(ctx, p); err != nil {
			t.Fatalf("SetProfile(%s): %v", p, err)
		}
	}
	if cur, err := n.Current(); cur != sys.Gen2 || err != nil {
		t.Fatalf("Current = %q, %v; want %s", cur, err, sys.Gen2)
	}
	gens, err := n.Generations()
	if err != nil {
		t.Fatal(err)
	}
	want := []Generation{
		{Number: 1, Toplevel: sys.Gen1, Link: n.Profile() + "-1-link"},
		{Number: 2, Toplevel: sys.Gen2, Current: true, Link: n.Profile() + "-2-link"},
	}
	if len(gens) != len(want) {
		t.Fatalf("Generations = %+v, want %+v", gens, want)
	}
	for i := range want {
		created := gens[i].Created
		if created.IsZero() || time.Since(created) > time.Minute || time.Until(created) > time.Minute {
			t.Errorf("generation %d created %v: want the link's time, just now", i, created)
		}
		gens[i].Created = time.Time{}
		if gens[i] != want[i] {
			t.Errorf("generation %d = %+v, want %+v", i, gens[i], want[i])
		}
	}
	if err := n.SetProfile(ctx, ghost); err == nil {
		t.Error("SetProfile(ghost) succeeded")
	}
}

func TestBooted(t *testing.T) {
	sys := buildSystems(t)
	n, _ := newTestNix(t, Config{})
	if b, err := n.Booted(); b != "" || err != nil {
		t.Fatalf("Booted without link = %q, %v", b, err)
	}
	if err := os.Symlink(sys.Gen1, n.cfg.BootedLink); err != nil {
		t.Fatal(err)
	}
	if b, err := n.Booted(); b != sys.Gen1 || err != nil {
		t.Fatalf("Booted = %q, %v; want %s", b, err, sys.Gen1)
	}
}

func TestActivationSwitches(t *testing.T) {
	sys := buildSystems(t)
	n, switchLog := newTestNix(t, Config{})
	runDir := filepath.Join(t.TempDir(), "run")
	a, err := n.StartActivation(context.Background(), sys.Gen2, "switch", runDir)
	if err != nil {
		t.Fatal(err)
	}
	res := wait(t, a, 30*time.Second)
	if !res.OK() || res.Err() != nil {
		t.Fatalf("result = %+v, want OK", res)
	}
	if res.Toplevel != sys.Gen2 || res.Action != "switch" || res.Finished.Before(res.Started) {
		t.Errorf("result = %+v", res)
	}
	if !strings.Contains(res.OutputTail, "switch-to-configuration: switch done") {
		t.Errorf("output tail %q lacks the switch's output", res.OutputTail)
	}
	if got := readLines(t, switchLog); len(got) != 1 || got[0] != "switch "+sys.Gen2 {
		t.Errorf("switch log = %q, want [switch %s]", got, sys.Gen2)
	}
	// The recorded activation can be found again, with its result.
	b, ok, err := n.ResumeActivation(runDir)
	if err != nil || !ok || b.ID != a.ID || b.Toplevel != sys.Gen2 || b.Action != "switch" {
		t.Fatalf("ResumeActivation = %+v, %v, %v", b, ok, err)
	}
	if res := wait(t, b, 5*time.Second); !res.OK() {
		t.Errorf("resumed result = %+v", res)
	}
	// "test" and "boot" are passed on as they are.
	for _, action := range []string{"test", "boot"} {
		a, err := n.StartActivation(context.Background(), sys.Gen1, action, runDir)
		if err != nil {
			t.Fatal(err)
		}
		if res := wait(t, a, 30*time.Second); !res.OK() {
			t.Errorf("%s: %+v", action, res)
		}
	}
	if got := readLines(t, switchLog); len(got) != 3 || got[1] != "test "+sys.Gen1 || got[2] != "boot "+sys.Gen1 {
		t.Errorf("switch log = %q", got)
	}
}

func TestActivationFails(t *testing.T) {
	sys := buildSystems(t)
	n, _ := newTestNix(t, Config{})
	a, err := n.StartActivation(context.Background(), sys.Fail, "switch", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res := wait(t, a, 30*time.Second)
	if res.OK() || res.ExitCode != 1 {
		t.Fatalf("result = %+v, want exit code 1", res)
	}
	if !strings.Contains(res.OutputTail, "baked failure") {
		t.Errorf("output tail %q lacks %q", res.OutputTail, "baked failure")
	}
	var ae *ActivationError
	if err := res.Err(); !errors.As(err, &ae) || ae.Phase != "switch" || !strings.Contains(err.Error(), "baked failure") {
		t.Errorf("Err() = %v, want an ActivationError of phase switch", err)
	}
}

// A SIGKILLed labd does not take the activation with it, and the next labd
// learns its outcome.
func TestDetachedActivationSurvivesParent(t *testing.T) {
	sys := buildSystems(t)
	dir := t.TempDir()
	runDir := filepath.Join(dir, "run")
	switchLog := filepath.Join(dir, "switch.log")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(nixEnv(dir),
		starterEnv+"=1",
		"NIXSYS_TEST_PROFILE="+filepath.Join(dir, "profiles", "system"),
		"NIXSYS_TEST_TOPLEVEL="+sys.Slow,
		"NIXSYS_TEST_RUNDIR="+runDir,
		"FAKE_NIXOS_LOG="+switchLog)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != -1 {
		t.Fatalf("starter: %v (want killed by SIGKILL)\nstdout: %s\nstderr: %s", err, out, stderr.String())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("starter printed %q, want the helper's pid", out)
	}
	if !processAlive(pid) {
		t.Fatalf("helper %d died with its parent", pid)
	}
	n, _ := newTestNix(t, Config{Profile: filepath.Join(dir, "profiles", "system")})
	a, ok, err := n.ResumeActivation(runDir)
	if err != nil || !ok {
		t.Fatalf("ResumeActivation = %v, %v", ok, err)
	}
	if a.Toplevel != sys.Slow || a.Pid != pid {
		t.Errorf("resumed %+v, want toplevel %s pid %d", a, sys.Slow, pid)
	}
	// While it runs, a second activation is refused.
	if _, err := n.StartActivation(context.Background(), sys.Gen1, "switch", runDir); !errors.Is(err, ErrActivationRunning) {
		t.Errorf("second StartActivation = %v, want ErrActivationRunning", err)
	}
	res := wait(t, a, 30*time.Second)
	if !res.OK() {
		t.Fatalf("result = %+v", res)
	}
	if got := readLines(t, switchLog); len(got) != 1 || got[0] != "switch "+sys.Slow {
		t.Errorf("switch log = %q", got)
	}
	if d := res.Finished.Sub(res.Started); d < 2*time.Second {
		t.Errorf("switch took %s, want ≥ 2s (sleepSwitch = 2)", d)
	}
}

func wait(t *testing.T, a *Activation, d time.Duration) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	res, err := a.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return res
}
