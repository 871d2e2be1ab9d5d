package nixsys

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// StartActivation starts <toplevel>/bin/switch-to-configuration <action> in
// a detached helper (see the package doc) and returns at once. ctx bounds
// only the start (systemd-run), never the activation: use Wait's ctx for
// that. It refuses with ErrActivationRunning while an earlier activation
// recorded in runDir is still running.
func (n *Nix) StartActivation(ctx context.Context, toplevel, action, runDir string) (*Activation, error) {
	a := &Activation{Toplevel: toplevel, Action: action, RunDir: runDir}
	startErr := func(err error) error {
		return &ActivationError{Phase: "start", Toplevel: toplevel, Action: action, Err: err}
	}
	exe, err := n.prepare(toplevel, action, runDir)
	if err != nil {
		return nil, startErr(err)
	}
	for _, f := range []string{resultFile, pidFile} {
		if err := os.Remove(filepath.Join(runDir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, startErr(err)
		}
	}
	logPath := filepath.Join(runDir, logFile)
	if err := os.Rename(logPath, logPath+".1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, startErr(err)
	}
	a.ID = randomID()
	a.Started = time.Now()
	args := helperArgs(runDir, a.ID, toplevel, action, n.cfg.AllowNonStorePaths)
	if n.detach == DetachSystemdRun {
		a.Unit = "lab-activate-" + a.ID
	}
	rec := record{ID: a.ID, Toplevel: toplevel, Action: action, Detach: n.detach, Unit: a.Unit, Started: a.Started}
	if err := writeJSON(filepath.Join(runDir, recordFile), rec); err != nil {
		return nil, startErr(err)
	}
	log := n.log.With("toplevel", toplevel, "action", action, "id", a.ID)
	if n.detach == DetachSystemdRun {
		argv := systemdRunArgv(a.Unit, exe, append(passEnv(), n.cfg.Env...), args)
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, startErr(fmt.Errorf("systemd-run: %w: %s", err, tail(out)))
		}
		log.Info("activation started", "unit", a.Unit)
		return a, nil
	}
	if err := n.startSetsid(a, exe, args, logPath); err != nil {
		return nil, startErr(err)
	}
	rec.Pid = a.Pid
	if err := writeJSON(filepath.Join(runDir, recordFile), rec); err != nil {
		log.Warn("record helper pid", "err", err) // informational only
	}
	log.Info("activation started", "pid", a.Pid)
	return a, nil
}

// CheckActivation reports, before anything changes, what would keep
// StartActivation from running <toplevel>/bin/switch-to-configuration
// <action> in runDir: an invalid action or toplevel, a run directory that
// cannot be created or written (e.g. a file in its place), an activation
// still running there, labd's own executable not found, or a toplevel
// without an executable switch-to-configuration. Errors are
// *ActivationError of phase "check".
func (n *Nix) CheckActivation(toplevel, action, runDir string) error {
	checkErr := func(err error) error {
		return &ActivationError{Phase: "check", Toplevel: toplevel, Action: action, Err: err}
	}
	if _, err := n.prepare(toplevel, action, runDir); err != nil {
		return checkErr(err)
	}
	script := filepath.Join(toplevel, "bin", "switch-to-configuration")
	st, err := os.Stat(script)
	if err != nil {
		return checkErr(fmt.Errorf("not a NixOS system: %w", err))
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return checkErr(fmt.Errorf("not a NixOS system: %s is not an executable file", script))
	}
	return nil
}

// prepare checks what an activation needs and creates runDir; it returns
// labd's own executable (the helper).
func (n *Nix) prepare(toplevel, action, runDir string) (string, error) {
	if err := validateActivation(toplevel, action, n.cfg.AllowNonStorePaths); err != nil {
		return "", err
	}
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return "", fmt.Errorf("activation run directory: %w", err)
	}
	probe, err := os.CreateTemp(runDir, ".probe*")
	if err != nil {
		return "", fmt.Errorf("activation run directory is not writable: %w", err)
	}
	probe.Close()
	if err := os.Remove(probe.Name()); err != nil {
		return "", fmt.Errorf("activation run directory: %w", err)
	}
	if prev, ok, err := n.ResumeActivation(runDir); err != nil {
		return "", err
	} else if ok {
		if _, done, _ := readResult(runDir, prev.ID); !done {
			if gone, _ := prev.helperGone(); !gone {
				return "", fmt.Errorf("%w: %s %s (id %s)", ErrActivationRunning, prev.Action, prev.Toplevel, prev.ID)
			}
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own executable: %w", err)
	}
	return exe, nil
}

// startSetsid starts the helper in a new session, its output appended to
// logPath, and reaps it in a goroutine.
func (n *Nix) startSetsid(a *Activation, exe string, args []string, logPath string) error {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(append(os.Environ(), n.cfg.Env...), helperEnv+"=1")
	cmd.Stdin = nil // /dev/null
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start helper %s: %w", exe, err)
	}
	a.Pid = cmd.Process.Pid
	exited := make(chan struct{})
	a.exited = exited
	go func() {
		a.exitErr = cmd.Wait()
		close(exited)
	}()
	return nil
}

// ResumeActivation returns the activation recorded in runDir (by this or
// an earlier labd process), whether finished or not; false if runDir
// records none. Compare its Toplevel and Action with what the caller
// expects before trusting its result.
func (n *Nix) ResumeActivation(runDir string) (*Activation, bool, error) {
	var rec record
	ok, err := readJSON(filepath.Join(runDir, recordFile), &rec)
	if err != nil || !ok {
		return nil, false, err
	}
	return &Activation{ID: rec.ID, Toplevel: rec.Toplevel, Action: rec.Action, RunDir: runDir,
		Started: rec.Started, Pid: rec.Pid, Unit: rec.Unit}, true, nil
}

// validateActivation checks what the helper will run.
func validateActivation(toplevel, action string, allowNonStore bool) error {
	if !validActions[action] {
		return fmt.Errorf("%w: %q", ErrInvalidAction, action)
	}
	if allowNonStore && filepath.IsAbs(toplevel) {
		return nil
	}
	return ValidStorePath(toplevel)
}

// passEnv is the part of labd's environment that systemd-run must pass on
// (a transient unit does not inherit it); nixos-rebuild passes the same.
func passEnv() []string {
	var env []string
	for _, name := range []string{"LOCALE_ARCHIVE", "NIXOS_INSTALL_BOOTLOADER"} {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	return env
}

// systemdRunArgv is the command that starts the helper as a transient unit.
func systemdRunArgv(unit, exe string, env, args []string) []string {
	argv := []string{"systemd-run", "--collect", "--quiet", "--service-type=exec",
		"--unit", unit, "-E", helperEnv + "=1"}
	for _, kv := range env {
		argv = append(argv, "-E", kv)
	}
	argv = append(argv, "--", exe)
	return append(argv, args...)
}

func randomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func tail(b []byte) string {
	var t tailBuffer
	_, _ = t.Write(b)
	return string(t.Bytes())
}
