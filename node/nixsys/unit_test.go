package nixsys

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// Tests here need no Nix: toplevels are scripts in a temporary directory
// (AllowNonStorePaths) and profiles are symlinks made by hand.

const (
	storeA = "/nix/store/bkliyaj65zfdd9pvdm83747bp7fyb740-nixos-system-node1-1"
	storeB = "/nix/store/qvvhyivfhxyqzvyzsd9xyzvqfc5p6abd-nixos-system-node1-2"
)

func TestValidStorePath(t *testing.T) {
	good := []string{storeA, storeB, "/nix/store/00000000000000000000000000000000-a",
		"/nix/store/00000000000000000000000000000000-A+-._?=z",
		"/nix/store/00000000000000000000000000000000-" + strings.Repeat("n", 211)}
	for _, p := range good {
		if err := ValidStorePath(p); err != nil {
			t.Errorf("ValidStorePath(%q) = %v", p, err)
		}
	}
	bad := map[string]string{
		"":           "empty",
		"/nix/store": "store dir only",
		"/tmp/bkliyaj65zfdd9pvdm83747bp7fyb740-x":                                 "other dir",
		"nix/store/bkliyaj65zfdd9pvdm83747bp7fyb740-x":                            "relative",
		"/nix/store/bkliyaj65zfdd9pvdm83747bp7fyb74-x":                            "31-char hash",
		"/nix/store/bkliyaj65zfdd9pvdm83747bp7fyb740x":                            "no dash",
		"/nix/store/bkliyaj65zfdd9pvdm83747bp7fyb740-":                            "empty name",
		"/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x":                           "e not nix-base32",
		"/nix/store/BKLIYAJ65ZFDD9PVDM83747BP7FYB740-x":                           "upper-case hash",
		"/nix/store/bkliyaj65zfdd9pvdm83747bp7fyb740-.x":                          "name starts with dot",
		"/nix/store/bkliyaj65zfdd9pvdm83747bp7fyb740-a/bin":                       "path inside",
		"/nix/store/bkliyaj65zfdd9pvdm83747bp7fyb740-a b":                         "space",
		"/nix/store/bkliyaj65zfdd9pvdm83747bp7fyb740-a;rm":                        "semicolon",
		"/nix/store/bkliyaj65zfdd9pvdm83747bp7fyb740-a\n":                         "newline",
		"/nix/store/../bkliyaj65zfdd9pvdm83747bp7fyb740-a":                        "dot-dot",
		"/nix/store/00000000000000000000000000000000-" + strings.Repeat("n", 212): "name too long",
	}
	for p, why := range bad {
		if err := ValidStorePath(p); !errors.Is(err, proto.ErrInvalidField) {
			t.Errorf("%s: ValidStorePath(%q) = %v, want ErrInvalidField", why, p, err)
		}
	}
}

func FuzzValidStorePath(f *testing.F) {
	for _, s := range []string{storeA, storeB, "/nix/store/", "/nix/store/x-y", storeA + "/bin", "/nix/store/" + strings.Repeat("0", 32) + "-.a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidStorePath(s) != nil {
			return
		}
		// A valid store path is one clean path element under the store,
		// safe to pass as an argument and to join "bin/..." onto.
		if filepath.Clean(s) != s || filepath.Dir(s) != "/nix/store" || strings.ContainsAny(s, " \t\n;$`'\"\\*") {
			t.Fatalf("accepted %q", s)
		}
		if _, ok := storeTop(s + "/bin/switch-to-configuration"); !ok {
			t.Fatalf("storeTop rejects a path inside %q", s)
		}
	})
}

func TestGenerationsFromLinks(t *testing.T) {
	dir := t.TempDir()
	profile := filepath.Join(dir, "system")
	for _, l := range [][2]string{
		{storeA, "system-1-link"}, {storeB, "system-10-link"}, {storeA, "system-2-link"},
		{storeA, "system-x-link"}, {storeA, "other-1-link"}, {storeA, "system-3"}, {"system-10-link", "system"},
	} {
		if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	n, err := New(Config{Profile: profile})
	if err != nil {
		t.Fatal(err)
	}
	gens, err := n.Generations()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range gens {
		got = append(got, strings.Join([]string{filepath.Base(g.Link), g.Toplevel, map[bool]string{true: "current"}[g.Current]}, " "))
	}
	want := []string{"system-1-link " + storeA + " ", "system-2-link " + storeA + " ", "system-10-link " + storeB + " current"}
	if !slices.Equal(got, want) {
		t.Errorf("Generations:\n got %q\nwant %q", got, want)
	}
	if cur, err := n.Current(); cur != storeB || err != nil {
		t.Errorf("Current = %q, %v", cur, err)
	}
	// A profile outside the store ends where the links end.
	if err := os.Symlink("system", filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nowhere", filepath.Join(dir, "broken")); err != nil {
		t.Fatal(err)
	}
	if _, err := resolveLink(filepath.Join(dir, "broken")); err == nil {
		t.Error("resolveLink(broken chain) succeeded")
	}
}

func TestNewValidates(t *testing.T) {
	for name, cfg := range map[string]Config{
		"relative profile": {Profile: "profiles/system"},
		"odd options":      {Options: []string{"substituters"}},
		"detach":           {Detach: "nohup"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	t.Setenv("INVOCATION_ID", "")
	n, err := New(Config{})
	if err != nil || n.detach != DetachSetsid || n.Profile() != DefaultProfile {
		t.Errorf("New(zero) = %+v, %v", n, err)
	}
}

func TestSystemdRunArgv(t *testing.T) {
	args := helperArgs("/var/lib/lab/run", "abc", storeA, "switch", false)
	got := systemdRunArgv("lab-activate-abc", "/run/current-system/sw/bin/labd", []string{"LOCALE_ARCHIVE=/x", "A=b c"}, args)
	want := []string{"systemd-run", "--collect", "--quiet", "--service-type=exec", "--unit", "lab-activate-abc",
		"-E", "LAB_ACTIVATE_HELPER=1", "-E", "LOCALE_ARCHIVE=/x", "-E", "A=b c",
		"--", "/run/current-system/sw/bin/labd",
		"-lab-activate-helper", "-run-dir", "/var/lib/lab/run", "-id", "abc", "-toplevel", storeA, "-action", "switch"}
	if !slices.Equal(got, want) {
		t.Errorf("argv:\n got %q\nwant %q", got, want)
	}
}

// fakeToplevel writes a toplevel whose switch-to-configuration is script.
func fakeToplevel(t *testing.T, script string) string {
	t.Helper()
	top := t.TempDir()
	if err := os.Mkdir(filepath.Join(top, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(top, "bin", "switch-to-configuration"), []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return top
}

func TestStartActivationRejects(t *testing.T) {
	n, _ := newTestNix(t, Config{})
	runDir := t.TempDir()
	if _, err := n.StartActivation(context.Background(), storeA, "reboot", runDir); !errors.Is(err, ErrInvalidAction) {
		t.Errorf("action reboot: %v, want ErrInvalidAction", err)
	}
	top := fakeToplevel(t, "exit 0")
	var ae *ActivationError
	if _, err := n.StartActivation(context.Background(), top, "switch", runDir); !errors.Is(err, proto.ErrInvalidField) || !errors.As(err, &ae) || ae.Phase != "start" {
		t.Errorf("non-store toplevel: %v, want a start ActivationError wrapping ErrInvalidField", err)
	}
	if _, ok, err := n.ResumeActivation(runDir); ok || err != nil {
		t.Errorf("ResumeActivation after refusals = %v, %v; want nothing recorded", ok, err)
	}
	if code := runHelper([]string{"-run-dir", runDir, "-id", "x", "-toplevel", top, "-action", "switch"}, &strings.Builder{}); code == 0 {
		t.Error("helper ran a non-store toplevel without -allow-non-store")
	}
}

func TestHelperLost(t *testing.T) {
	n, _ := newTestNix(t, Config{AllowNonStorePaths: true})
	runDir := t.TempDir()
	a, err := n.StartActivation(context.Background(), fakeToplevel(t, "sleep 30"), "switch", runDir)
	if err != nil {
		t.Fatal(err)
	}
	// Kill the helper (not the switch) as an OOM killer would.
	var pid int
	for deadline := time.Now().Add(10 * time.Second); pid == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		pid = readHelperPid(runDir, a.ID)
	}
	if pid != a.Pid {
		t.Fatalf("helper recorded pid %d, started %d", pid, a.Pid)
	}
	t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) }) // the sleeping switch
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, act := range []*Activation{a, mustResume(t, n, runDir)} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := act.Wait(ctx)
		cancel()
		if !errors.Is(err, ErrHelperLost) {
			t.Errorf("Wait = %v, want ErrHelperLost", err)
		}
	}
}

func TestWaitTimeoutAndExitCodes(t *testing.T) {
	n, _ := newTestNix(t, Config{AllowNonStorePaths: true})
	runDir := t.TempDir()
	a, err := n.StartActivation(context.Background(), fakeToplevel(t, `echo "to stdout"; echo "to stderr" >&2; sleep 0.3; exit 7`), "test", runDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	_, err = a.Wait(ctx)
	cancel()
	var ae *ActivationError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ae) || ae.Phase != "wait" {
		t.Fatalf("Wait with a short deadline = %v", err)
	}
	res := wait(t, a, 10*time.Second) // Wait again: the switch went on.
	if res.ExitCode != 7 || !strings.Contains(res.OutputTail, "to stdout\nto stderr\n") {
		t.Errorf("result = %+v", res)
	}
	// A missing switch-to-configuration is exit code -1, not a lost helper.
	a, err = n.StartActivation(context.Background(), t.TempDir(), "switch", runDir)
	if err != nil {
		t.Fatal(err)
	}
	if res := wait(t, a, 10*time.Second); res.ExitCode != -1 || !strings.Contains(res.OutputTail, "no such file") {
		t.Errorf("missing script: %+v", res)
	}
	if _, err := os.Stat(filepath.Join(runDir, logFile+".1")); err != nil {
		t.Errorf("previous log not kept: %v", err)
	}
}

func mustResume(t *testing.T, n *Nix, runDir string) *Activation {
	t.Helper()
	a, ok, err := n.ResumeActivation(runDir)
	if err != nil || !ok {
		t.Fatalf("ResumeActivation = %v, %v", ok, err)
	}
	return a
}

// labd died after recording an activation and before its helper started:
// after the start grace, Wait says the helper is lost AND that the switch
// never ran (so the caller may start it again); with a pid recorded by
// the helper it only says lost.
func TestWaitTellsANeverStartedActivation(t *testing.T) {
	runDir := t.TempDir()
	rec := record{ID: "abc", Toplevel: storeA, Action: "switch", Detach: DetachSetsid, Started: time.Now().Add(-helperStartGrace - time.Second)}
	if err := writeJSON(filepath.Join(runDir, recordFile), rec); err != nil {
		t.Fatal(err)
	}
	n, err := New(Config{Profile: filepath.Join(t.TempDir(), "system")})
	if err != nil {
		t.Fatal(err)
	}
	a, ok, err := n.ResumeActivation(runDir)
	if err != nil || !ok {
		t.Fatalf("ResumeActivation = %v, %v", ok, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Wait(ctx); !errors.Is(err, ErrHelperLost) || !errors.Is(err, ErrNeverStarted) {
		t.Fatalf("Wait = %v, want ErrHelperLost and ErrNeverStarted", err)
	}
	// The helper had started (its pid is recorded) and died: lost, and
	// the switch may have run.
	if err := os.WriteFile(filepath.Join(runDir, pidFile), []byte("abc 999999999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Wait(ctx); !errors.Is(err, ErrHelperLost) || errors.Is(err, ErrNeverStarted) {
		t.Fatalf("Wait = %v, want ErrHelperLost only", err)
	}
}

// CheckActivation finds, before anything changes, what would keep an
// activation from starting: a file where the run directory should be, a
// toplevel without switch-to-configuration, an activation still running.
func TestCheckActivation(t *testing.T) {
	n, _ := newTestNix(t, Config{AllowNonStorePaths: true})
	top := fakeToplevel(t, "sleep 30")
	runDir := filepath.Join(t.TempDir(), "activation")
	if err := n.CheckActivation(top, "switch", runDir); err != nil {
		t.Fatalf("CheckActivation of a good toplevel: %v", err)
	}
	var ae *ActivationError
	notDir := filepath.Join(t.TempDir(), "activation")
	if err := os.WriteFile(notDir, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := n.CheckActivation(top, "switch", notDir); !errors.As(err, &ae) || ae.Phase != "check" || !strings.Contains(err.Error(), "activation run directory") {
		t.Errorf("run dir is a file: %v, want a check ActivationError naming the run directory", err)
	}
	if err := n.CheckActivation(t.TempDir(), "switch", runDir); !errors.As(err, &ae) || ae.Phase != "check" || !strings.Contains(err.Error(), "switch-to-configuration") {
		t.Errorf("no switch-to-configuration: %v", err)
	}
	if err := n.CheckActivation(top, "reboot", runDir); !errors.Is(err, ErrInvalidAction) {
		t.Errorf("action reboot: %v, want ErrInvalidAction", err)
	}
	a, err := n.StartActivation(context.Background(), top, "switch", runDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-a.Pid, syscall.SIGKILL) })
	if err := n.CheckActivation(top, "switch", runDir); !errors.Is(err, ErrActivationRunning) {
		t.Errorf("while one runs: %v, want ErrActivationRunning", err)
	}
	if _, err := n.StartActivation(context.Background(), top, "switch", notDir); !errors.As(err, &ae) || ae.Phase != "start" {
		t.Errorf("StartActivation with a file as run dir: %v, want a start ActivationError", err)
	}
}
