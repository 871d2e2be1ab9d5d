package nixsys

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// helperEnv, set to "1", makes MaybeRunHelper turn the process into the
// activation helper.
const helperEnv = "LAB_ACTIVATE_HELPER"

// MaybeRunHelper must be called first by the main of every program that
// starts activations (labd's main, and the TestMain of tests that run real
// activations): when LAB_ACTIVATE_HELPER=1 the process is the activation
// helper; it runs the switch, records the result and exits. Otherwise it
// returns at once.
func MaybeRunHelper() {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	os.Exit(runHelper(os.Args[1:], os.Stderr))
}

// helperArgs are the helper's command-line arguments.
func helperArgs(runDir, id, toplevel, action string, allowNonStore bool) []string {
	args := []string{"-lab-activate-helper", "-run-dir", runDir, "-id", id, "-toplevel", toplevel, "-action", action}
	if allowNonStore {
		args = append(args, "-allow-non-store")
	}
	return args
}

// runHelper is the helper: it runs <toplevel>/bin/switch-to-configuration
// <action> with its output appended to activation.log, then writes
// activation.result. It returns the helper's exit code: 0 once the result is
// recorded, whatever the switch's exit code.
func runHelper(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("lab-activate-helper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Bool("lab-activate-helper", false, "marks the helper's command line")
	runDir := fs.String("run-dir", "", "directory of the activation's files")
	id := fs.String("id", "", "activation id")
	toplevel := fs.String("toplevel", "", "system to activate")
	action := fs.String("action", "", "switch-to-configuration action")
	allowNonStore := fs.Bool("allow-non-store", false, "allow a toplevel outside /nix/store (tests)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "lab-activate-helper: %v\n", err)
		return 1
	}
	if *runDir == "" || *id == "" {
		return fail(errors.New("-run-dir and -id are required"))
	}
	if err := validateActivation(*toplevel, *action, *allowNonStore); err != nil {
		return fail(err)
	}
	pid := fmt.Sprintf("%s %d\n", *id, os.Getpid())
	if err := writeFileAtomic(filepath.Join(*runDir, pidFile), []byte(pid)); err != nil {
		return fail(err)
	}
	res := resultRecord{ID: *id, Toplevel: *toplevel, Action: *action, Started: time.Now()}
	res.ExitCode, res.Error = runSwitch(*runDir, *toplevel, *action)
	res.Finished = time.Now()
	if err := writeJSON(filepath.Join(*runDir, resultFile), res); err != nil {
		return fail(err)
	}
	return 0
}

// runSwitch runs the switch and returns its exit code (128+signal when
// killed by one, -1 when it could not run) and the reason when not 0.
func runSwitch(runDir, toplevel, action string) (int, string) {
	logf, err := os.OpenFile(filepath.Join(runDir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return -1, err.Error()
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(toplevel, "bin", "switch-to-configuration"), action)
	cmd.Env = withoutEnv(os.Environ(), helperEnv)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	err = cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0, ""
	case errors.As(err, &exitErr):
		code := exitErr.ExitCode() // -1 when killed by a signal
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			fmt.Fprintf(logf, "lab-activate-helper: switch-to-configuration killed by %v\n", ws.Signal())
			code = 128 + int(ws.Signal())
		}
		return code, err.Error()
	default:
		fmt.Fprintf(logf, "lab-activate-helper: %v\n", err)
		return -1, err.Error()
	}
}

func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}
