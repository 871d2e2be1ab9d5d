package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Node is one labd process with its own profile, state directory, switch
// log and boot id, as if it were its own machine.
type Node struct {
	env     *Env
	Name    string
	Dir     string
	Profile string
	Config  string
	cmd     *exec.Cmd
	logf    *os.File
	netns   string // set by NewLANNode: labd runs in this network namespace
	mounts  string // shell commands run in a private mount namespace before labd (root)
	nixRoot string // ... with this directory as its private /nix
}

// NewNode writes the node's config and installs initial as its current
// system (as if the machine had been installed with it). It does not start
// labd.
func (e *Env) NewNode(name string, groups []string, initial string) *Node {
	e.t.Helper()
	dir := filepath.Join(e.Dir, name)
	n := &Node{env: e, Name: name, Dir: dir, Profile: filepath.Join(dir, "profiles", "system"), Config: filepath.Join(dir, "labd.yaml")}
	for _, d := range []string{filepath.Dir(n.Profile), filepath.Join(dir, "state"), filepath.Dir(n.Textfile())} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			e.t.Fatal(err)
		}
	}
	if initial != "" {
		if out, err := e.command("nix-env", "-p", n.Profile, "--set", initial).CombinedOutput(); err != nil {
			e.t.Fatalf("nix-env --set: %v\n%s", err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "boot_id"), []byte("boot-1\n"), 0o644); err != nil {
		e.t.Fatal(err)
	}
	cfg := fmt.Sprintf(`# labd config written by the integration harness
name: %s
groups: [%s]
broker: %s
state_dir: %s
profile: %s
boot_id_file: %s
# never the host's systemctl reboot: a reboot only leaves a marker
reboot_command: [touch, %q]
log_level: debug
%strusted_keys:
  - %q
timeouts:
  fetch: 60s
  activate: 60s
  confirm: 30s
metrics:
  textfile_dir: %s
checks:
  - name: system-healthy
    type: command
    # the new system is unhealthy when it carries the fail-health marker
    command: [test, "!", "-e", %q]
    timeout: 5s
    interval: 200ms
    retries: 1
`, name, strings.Join(groups, ", "), e.BrokerURL(), filepath.Join(dir, "state"), n.Profile,
		filepath.Join(dir, "boot_id"), filepath.Join(dir, "reboot-requested"), e.nodeConfigLines(name), e.Key.Public().String(), filepath.Dir(n.Textfile()), filepath.Join(n.Profile, "fail-health"))
	if err := os.WriteFile(n.Config, []byte(cfg), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(n.Stop)
	return n
}

// Textfile is where labd writes its metrics (metrics.textfile_dir, as
// for node_exporter).
func (n *Node) Textfile() string { return filepath.Join(n.Dir, "textfile", "labd.prom") }

// SwitchLog is the node's record of switch-to-configuration calls.
func (n *Node) SwitchLog() string { return filepath.Join(n.Dir, "switch.log") }

// Switches returns the lines of the switch log ("<action> <toplevel>").
func (n *Node) Switches() []string {
	b, err := os.ReadFile(n.SwitchLog())
	if err != nil {
		return nil
	}
	return strings.Fields(strings.ReplaceAll(string(b), " ", "_"))
}

// Start runs labd.
func (n *Node) Start() {
	n.env.t.Helper()
	if n.cmd != nil && n.cmd.ProcessState == nil {
		n.env.t.Fatalf("%s already running", n.Name)
	}
	logf, err := os.OpenFile(filepath.Join(n.Dir, "labd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		n.env.t.Fatal(err)
	}
	cmd := n.env.command(bin.labd, "--config", n.Config)
	if n.netns != "" {
		// Its own host: its network namespace and its own /nix (the
		// mount namespace ip netns exec creates is private to it).
		cmd = n.env.command("ip", "netns", "exec", n.netns, "sh", "-c", `mount --bind "$LAB_NODE_NIX" /nix && exec "$@"`,
			"sh", bin.labd, "--config", n.Config)
		cmd.Env = append(cmd.Env, "LAB_NODE_NIX="+n.nixRoot)
	} else if n.mounts != "" {
		cmd = n.env.command("unshare", "--mount", "--propagation", "private", "sh", "-c", n.mounts+` && exec "$@"`,
			"sh", bin.labd, "--config", n.Config)
	}
	cmd.Env = append(cmd.Env, "FAKE_NIXOS_LOG="+n.SwitchLog())
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that Kill takes its children (nix-store)
	// with it, as systemd's KillMode=control-group does. Activations
	// are detached into their own session and survive, as with
	// systemd-run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		n.env.t.Fatal(err)
	}
	n.cmd, n.logf = cmd, logf
}

// Stop terminates labd gracefully.
func (n *Node) Stop() {
	if n.cmd != nil {
		stopProcess(n.cmd)
		n.logf.Close()
	}
}

// Kill SIGKILLs labd and its children, as a crash would (or systemd
// stopping a hung unit).
func (n *Node) Kill() {
	n.env.t.Helper()
	if n.cmd == nil || n.cmd.Process == nil {
		n.env.t.Fatalf("%s not running", n.Name)
	}
	_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	_ = n.cmd.Wait()
	n.logf.Close()
}

// Current returns the store path the node's system profile points at.
func (n *Node) Current() string {
	p, err := filepath.EvalSymlinks(n.Profile)
	if err != nil {
		return ""
	}
	return p
}

// Log returns labd's log so far (for failure messages).
func (n *Node) Log() string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, "labd.log"))
	return string(b)
}

// DumpOnFailure prints every node's log when the test failed.
func (e *Env) DumpOnFailure(nodes ...*Node) {
	e.t.Cleanup(func() {
		if !e.t.Failed() {
			return
		}
		for _, n := range nodes {
			e.t.Logf("==== %s labd.log ====\n%s", n.Name, tail(n.Log(), 6000))
		}
		b, _ := os.ReadFile(filepath.Join(e.Dir, "broker.log"))
		e.t.Logf("==== broker.log ====\n%s", tail(string(b), 3000))
	})
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// setBroker points the node at another broker URL (a proxy) and adds
// top-level config lines (e.g. "keepalive: 2s").
func (n *Node) setBroker(url string, extra ...string) {
	n.env.t.Helper()
	b, err := os.ReadFile(n.Config)
	if err != nil {
		n.env.t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "broker: "+n.env.BrokerURL(), "broker: "+url, 1)
	cfg = strings.Replace(cfg, "\nchecks:\n", "\n"+strings.Join(append(extra, "checks:\n"), "\n"), 1)
	if err := os.WriteFile(n.Config, []byte(cfg), 0o644); err != nil {
		n.env.t.Fatal(err)
	}
}
