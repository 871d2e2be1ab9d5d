package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/pki"
	"github.com/lab-fleet/lab/proto"
)

// nixosEval is what nix/tests/eval-modules.nix returns.
type nixosEval struct {
	LabdYaml             string   `json:"labdYaml"`
	LabSecrets           string   `json:"labSecrets"`
	NoSecretsEtc         bool     `json:"noSecretsEtc"`
	LabdExecStart        string   `json:"labdExecStart"`
	LabdLoadCredential   []string `json:"labdLoadCredential"`
	LabdRestartIfChanged bool     `json:"labdRestartIfChanged"`
	LabdRestart          string   `json:"labdRestart"`
	BrokerExecStart      string   `json:"brokerExecStart"`
	Firewall             []int    `json:"firewall"`
	OperatorKeys         []string `json:"operatorKeys"`
	// The broker host runs no lab-controller unit: its broker has the
	// service inside.
	BrokerHostHasControllerUnit      bool     `json:"brokerHostHasControllerUnit"`
	BrokerWithoutControllerExecStart string   `json:"brokerWithoutControllerExecStart"`
	ControllerExecStart              string   `json:"controllerExecStart"`
	ControllerLoadCredential         []string `json:"controllerLoadCredential"`
	ControllerStateDirectory         string   `json:"controllerStateDirectory"`
	ControllerUnit                   struct {
		WantedBy        []string `json:"wantedBy"`
		After           []string `json:"after"`
		Restart         string
		ProtectSystem   string
		NoNewPrivileges bool
		PrivateDevices  bool
		ReadWritePaths  []string
	} `json:"controllerUnit"`
	ControllerEtc         []string `json:"controllerEtc"`
	SeveralExecStart      string   `json:"severalExecStart"`
	SeveralConfig         string   `json:"severalConfig"`
	SeveralStateDirectory *string  `json:"severalStateDirectory"`
	SeveralLoadCredential []string `json:"severalLoadCredential"`

	WindowBrokerExecStart          string   `json:"windowBrokerExecStart"`
	WindowBrokerConfig             string   `json:"windowBrokerConfig"`
	WindowBrokerRestartTriggers    []string `json:"windowBrokerRestartTriggers"`
	WindowControllerExecStart      string   `json:"windowControllerExecStart"`
	WindowControllerConfig         string   `json:"windowControllerConfig"`
	WindowControllerLoadCredential []string `json:"windowControllerLoadCredential"`
	DefaultBrokerHasConfig         bool     `json:"defaultBrokerHasConfig"`
}

// evalNixOSModules evaluates nix/tests/eval-modules.nix (skipped loudly
// without NIXPKGS_LIB).
func evalNixOSModules(t *testing.T) nixosEval {
	t.Helper()
	libPath := os.Getenv("NIXPKGS_LIB")
	if libPath == "" {
		t.Skip("SKIPPED LOUDLY: NIXPKGS_LIB is not set, so lab's NixOS modules were NOT evaluated. " +
			"Point it at nixpkgs' lib/ (git clone https://github.com/nix-community/nixpkgs.lib; NIXPKGS_LIB=$PWD/nixpkgs.lib/lib) to run this test.")
	}
	requireTools(t, "nix-instantiate")
	out, err := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "../nix/tests/eval-modules.nix", "--arg", "libPath", libPath).Output()
	if err != nil {
		t.Fatalf("evaluating the modules: %v\n%s", err, stderrOf(err))
	}
	var got nixosEval
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return got
}

// lab.machine.secrets is written into the system itself, as
// /etc/lab/secrets.json (names and metadata, what labd reads of the new
// system before activating it); a machine that declares none has no such
// file, so its system is what it was before the option existed.
func TestNixOSModulesDeclareSecretsInTheSystem(t *testing.T) {
	got := evalNixOSModules(t)
	if want := `{"db-password":{"mode":"0400","owner":"postgres","path":"/run/lab-secrets/db-password","restart_units":["postgresql.service"]},"wifi":{}}`; got.LabSecrets != want {
		t.Errorf("/etc/lab/secrets.json (lab.machine.secrets):\n%s\nwant\n%s", got.LabSecrets, want)
	}
	if got.NoSecretsEtc {
		t.Error("a machine without lab.machine.secrets has /etc/lab/secrets.json")
	}
}

// execArgs splits an ExecStart line as systemd does, for the forms the
// modules write: bare words, and "..." with JSON's (C's) escapes; %% and $$
// are a literal % and $ in either.
func execArgs(t *testing.T, line string) []string {
	t.Helper()
	var args []string
	undouble := strings.NewReplacer("%%", "%", "$$", "$")
	for line = strings.TrimLeft(line, " "); line != ""; line = strings.TrimLeft(line, " ") {
		if line[0] != '"' {
			word, rest, _ := strings.Cut(line, " ")
			if strings.ContainsAny(word, "%$\\'\"") {
				t.Fatalf("ExecStart %q: bare word %q has characters systemd would interpret", line, word)
			}
			args, line = append(args, word), rest
			continue
		}
		end := 1
		for end < len(line) && line[end] != '"' {
			if line[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(line) {
			t.Fatalf("ExecStart: unterminated quote in %q", line)
		}
		var word string
		if err := json.Unmarshal([]byte(undouble.Replace(line[:end+1])), &word); err != nil {
			t.Fatalf("ExecStart: %q: %v", line[:end+1], err)
		}
		args, line = append(args, word), line[end+1:]
		if line != "" && line[0] != ' ' {
			t.Fatalf("ExecStart: text right after a quoted word: %q", line)
		}
	}
	return args
}

// flagValues are the values of every occurrence of flag in args.
func flagValues(args []string, flag string) []string {
	var vals []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			vals = append(vals, args[i+1])
		}
	}
	return vals
}

// The NixOS modules, evaluated with nixpkgs' own lib.evalModules (NixOS
// options they set declared by a stub): the unit and labd.yaml they
// generate, and the real labd accepting that configuration.
//
// It needs a copy of nixpkgs' lib/: NIXPKGS_LIB=/path/to/nixpkgs/lib (the
// nix-community/nixpkgs.lib repository is 8 MB).
func TestNixOSModulesGenerateAWorkingLabd(t *testing.T) {
	got := evalNixOSModules(t)
	t.Logf("generated labd.yaml: %s", got.LabdYaml)
	if got.LabdRestartIfChanged || got.LabdRestart != "always" {
		t.Errorf("labd unit: restartIfChanged %v, Restart %q: a switch would kill the labd running it", got.LabdRestartIfChanged, got.LabdRestart)
	}
	if !strings.HasSuffix(got.LabdExecStart, "/bin/labd --config /etc/labd/labd.yaml") {
		t.Errorf("ExecStart %q", got.LabdExecStart)
	}
	if len(got.LabdLoadCredential) != 2 || got.LabdLoadCredential[0] != "mqtt-password:/run/secrets/labd-mqtt-password" || got.LabdLoadCredential[1] != "tls-ca:/etc/lab/ca.crt" {
		t.Errorf("LoadCredential %v", got.LabdLoadCredential)
	}
	if !strings.Contains(got.BrokerExecStart, "labctl broker --listen 0.0.0.0:8883 --data-dir /var/lib/lab-broker --identities") {
		t.Errorf("broker ExecStart %q", got.BrokerExecStart)
	}
	if !strings.Contains(got.BrokerExecStart, " --json-mirror=false") {
		t.Errorf("broker ExecStart %q: jsonMirror = false did not turn the mirror off", got.BrokerExecStart)
	}
	// services.lab-broker.limits: the flags set, only those (labctl's
	// defaults for the rest; the other test runs labctl on this line).
	brokerArgs := execArgs(t, got.BrokerExecStart)
	for flag, want := range map[string]string{"--connect-timeout": "5s", "--max-pending-per-address": "16", "--connect-rate": "2.500000",
		"--login-ban-after": "8", "--trusted-networks": "none", "--max-pending": "", "--login-window": ""} {
		if vals := flagValues(brokerArgs, flag); (want == "" && len(vals) != 0) || (want != "" && (len(vals) != 1 || vals[0] != want)) {
			t.Errorf("broker ExecStart %s: %v, want %q", flag, vals, want)
		}
	}
	if len(got.Firewall) != 1 || got.Firewall[0] != 8883 {
		t.Errorf("firewall %v", got.Firewall)
	}
	var cfg map[string]any
	if err := json.Unmarshal([]byte(got.LabdYaml), &cfg); err != nil {
		t.Fatal(err)
	}
	machine, _ := cfg["machine"].(map[string]any)
	if tlsCfg, _ := cfg["tls"].(map[string]any); tlsCfg["ca"] != "/run/credentials/labd.service/tls-ca" {
		t.Errorf("tls: %v", cfg["tls"])
	}
	checks, _ := cfg["checks"].([]any)
	if cfg["name"] != "kitchen" || cfg["password_file"] != "/run/credentials/labd.service/mqtt-password" ||
		machine["reboot_order"] != float64(10) || len(checks) != 2 || !strings.HasSuffix(cfg["labd_path"].(string), "/bin/labd") {
		t.Errorf("labd.yaml: %v", cfg)
	}
	if keys, _ := cfg["trusted_keys"].([]any); len(keys) != 1 || keys[0] != "operator-2026:3o0Hq4zY0m8oD2cR9c5m8oYv7jKxk3lJ9mZbZcN0Q1k=" {
		t.Errorf("trusted_keys: %v", cfg["trusted_keys"])
	}
	if m, _ := cfg["metrics"].(map[string]any); len(m) != 1 || m["textfile_dir"] != "/var/lib/prometheus-node-exporter/textfile" {
		t.Errorf("metrics (services.labd.metrics.textfileDir): %v", cfg["metrics"])
	}
	if cfg["ssh_host_keys"] != "/persist/etc/ssh/ssh_host_*_key.pub" {
		t.Errorf("ssh_host_keys (services.labd.sshHostKeys): %v", cfg["ssh_host_keys"])
	}
	if cfg["check_interval"] != "15m" {
		t.Errorf("check_interval (services.labd.checkInterval): %v", cfg["check_interval"])
	}
	// lab.machine.hooks: the phases that have hooks, argv lists as given,
	// a timeout only where one was set (labd's default otherwise).
	hooks, _ := json.Marshal(cfg["hooks"])
	if want := `{"post_activate":[{"command":["/bin/sh","-c","curl -fsS http://127.0.0.1:8080/warm \u003e /dev/null"]}],` +
		`"post_rollback":[{"command":["logger","-t","lab","rolled back"],"timeout":"10s"}],` +
		`"pre_activate":[{"command":["/run/current-system/sw/bin/systemctl","is-system-running"],"timeout":"2m"}]}`; string(hooks) != want {
		t.Errorf("hooks (lab.machine.hooks):\n%s\nwant\n%s", hooks, want)
	}
	if keys, _ := cfg["controller_keys"].([]any); len(keys) != 1 || keys[0] != "controller-2026:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" {
		t.Errorf("controller_keys (services.labd.controllerKeys): %v", cfg["controller_keys"])
	}
	// The real labd accepts it (the credential path exists only in the
	// unit: point it at a file here).
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg["password_file"], cfg["state_dir"] = pw, filepath.Join(dir, "state")
	if err := pki.Init(filepath.Join(dir, "pki"), "test", 1); err != nil {
		t.Fatal(err)
	}
	cfg["tls"] = map[string]any{"ca": filepath.Join(dir, "pki", pki.CACert)}
	b, _ := json.Marshal(cfg)
	path := filepath.Join(dir, "labd.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin.labd, "--config", path, "--check-config").CombinedOutput(); err != nil {
		t.Fatalf("labd refuses the configuration the module generates: %v\n%s", err, out)
	} else {
		t.Logf("%s", out)
	}
}

// The controller service in the NixOS modules: services.lab-broker's
// controller options on labctl broker's command line (on, with trusted
// keys and a name; off), and services.lab-controller's unit for an
// external broker — then the real labctl runs both command lines: labctl
// broker --check-config accepts them, and the lab-controller command,
// pointed at a TLS broker and at files where systemd would put the
// credentials, connects with the controller identity and answers.
func TestNixOSModulesGenerateTheControllerService(t *testing.T) {
	got := evalNixOSModules(t)
	keys := got.OperatorKeys
	if len(keys) != 2 || !strings.ContainsAny(keys[1], "+/") {
		t.Fatalf("operatorKeys %v: want two, one with + and /", keys)
	}

	// The broker, its controller on.
	on := execArgs(t, got.BrokerExecStart)
	if tk := flagValues(on, "--trust-key"); len(tk) != 2 || tk[0] != keys[0] || tk[1] != keys[1] {
		t.Errorf("broker ExecStart %q: --trust-key %v, want one per controller.trustedKeys %v", got.BrokerExecStart, tk, keys)
	}
	if n := flagValues(on, "--controller-name"); len(n) != 1 || n[0] != "nas-ctl" {
		t.Errorf("broker ExecStart %q: --controller-name %v, want [nas-ctl]", got.BrokerExecStart, n)
	}
	if strings.Contains(got.BrokerExecStart, "--controller=false") {
		t.Errorf("broker ExecStart %q: the controller is on by default", got.BrokerExecStart)
	}
	if got.BrokerHostHasControllerUnit {
		t.Error("the broker host has a lab-controller unit it did not ask for")
	}
	// Its controller off: --controller=false, and the keys it was given
	// are not passed to a service that does not run.
	off := execArgs(t, got.BrokerWithoutControllerExecStart)
	if !slices.Contains(off, "--controller=false") || slices.Contains(off, "--trust-key") || slices.Contains(off, "--controller-name") {
		t.Errorf("broker ExecStart with controller.enable = false: %q", got.BrokerWithoutControllerExecStart)
	}

	// services.lab-controller.
	const cred = "/run/credentials/lab-controller.service/"
	ctl := execArgs(t, got.ControllerExecStart)
	if len(ctl) < 2 || !strings.HasSuffix(ctl[0], "/bin/labctl") || ctl[1] != "controller" {
		t.Fatalf("controller ExecStart %q", got.ControllerExecStart)
	}
	for flag, want := range map[string]string{
		"--broker":         "tls://mqtt.example.net:8883",
		"--username":       "ctl",
		"--password-file":  cred + "mqtt-password",
		"--tls-ca":         cred + "tls-ca",
		"--tls-cert":       cred + "tls-cert",
		"--tls-key":        cred + "tls-key",
		"--controller-dir": "/var/lib/lab-controller",
		"--log-level":      "info",
	} {
		if v := flagValues(ctl, flag); len(v) != 1 || v[0] != want {
			t.Errorf("controller ExecStart %q: %s %v, want %s", got.ControllerExecStart, flag, v, want)
		}
	}
	if tk := flagValues(ctl, "--trust-key"); len(tk) != 2 || tk[0] != keys[0] || tk[1] != keys[1] {
		t.Errorf("controller ExecStart %q: --trust-key %v, want %v", got.ControllerExecStart, tk, keys)
	}
	if slices.Contains(ctl, "--controller-name") || slices.Contains(ctl, "--config") {
		t.Errorf("controller ExecStart %q: the default name and one broker need neither --controller-name nor --config", got.ControllerExecStart)
	}
	wantCred := []string{"mqtt-password:/run/secrets/lab-controller-mqtt-password", "tls-ca:/etc/lab/ca.crt", "tls-cert:/run/secrets/ctl.crt", "tls-key:/run/secrets/ctl.key"}
	if !slices.Equal(got.ControllerLoadCredential, wantCred) {
		t.Errorf("controller LoadCredential %v, want %v", got.ControllerLoadCredential, wantCred)
	}
	u := got.ControllerUnit
	if got.ControllerStateDirectory != "lab-controller" || u.Restart != "always" || !slices.Equal(u.WantedBy, []string{"multi-user.target"}) ||
		!slices.Contains(u.After, "network-online.target") || u.ProtectSystem != "strict" || !u.NoNewPrivileges || !u.PrivateDevices ||
		!slices.Equal(u.ReadWritePaths, []string{"/var/lib/lab-controller"}) {
		t.Errorf("controller unit: StateDirectory %q, %+v", got.ControllerStateDirectory, u)
	}
	if len(got.ControllerEtc) != 0 {
		t.Errorf("one broker URL, yet /etc has %v", got.ControllerEtc)
	}
	// Two broker URLs: --config with the list; a dataDir outside /var/lib
	// is no StateDirectory; an argument with a space, % and $ is one
	// argument, passed as written.
	several := execArgs(t, got.SeveralExecStart)
	want := []string{"controller", "--log-level", "info", "--config", "/etc/lab-controller/config.yaml", "--controller-dir", "/srv/lab-controller",
		"--controller-name", "site-b", "--prefix", "lab 100%/$HOME"}
	if len(several) == 0 || !slices.Equal(several[1:], want) {
		t.Errorf("controller ExecStart with two brokers %q: arguments %q, want %q", got.SeveralExecStart, several, want)
	}
	var sc struct{ Broker []string }
	if err := json.Unmarshal([]byte(got.SeveralConfig), &sc); err != nil || !slices.Equal(sc.Broker, []string{"tls://a.example.net:8883", "wss://b.example.net/mqtt"}) {
		t.Errorf("/etc/lab-controller/config.yaml %q (%v)", got.SeveralConfig, err)
	}
	if got.SeveralStateDirectory != nil || len(got.SeveralLoadCredential) != 0 {
		t.Errorf("controller in /srv: StateDirectory %v, LoadCredential %v", got.SeveralStateDirectory, got.SeveralLoadCredential)
	}
	if t.Failed() {
		return
	}

	// The real labctl. Files: a CA, the broker's certificate, the
	// controller identity "ctl" (password and certificate, as the unit
	// uses both), an operator "ops" to ask the controller.
	dir := t.TempDir()
	ca, ids := filepath.Join(dir, "pki"), filepath.Join(dir, "identities.yaml")
	labctl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin.labctl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("labctl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	labctl("pki", "init", "--dir", ca)
	labctl("pki", "issue", "broker", "--dir", ca, "--host", "127.0.0.1")
	labctl("node", "add", "ctl", "--role", "controller", "--identities", ids, "--out", dir, "--pki", ca)
	labctl("node", "add", "ops", "--role", "controller", "--identities", ids, "--out", dir)

	// labctl broker accepts both of the module's command lines (its data
	// directory and identities moved here).
	for _, line := range []string{got.BrokerExecStart, got.BrokerWithoutControllerExecStart} {
		args := execArgs(t, line)[1:]
		for i, a := range args {
			switch {
			case a == "/var/lib/lab-broker/identities.yaml":
				args[i] = ids
			case a == "/var/lib/lab-broker":
				args[i] = filepath.Join(dir, "broker-check")
			}
		}
		if out, err := exec.Command(bin.labctl, append(args, "--check-config")...).CombinedOutput(); err != nil {
			t.Errorf("labctl broker refuses the module's command line %q: %v\n%s", line, err, out)
		}
	}

	// A TLS broker without its own controller, and the lab-controller
	// command against it.
	port, tlsPort := freePort(t), freePort(t)
	broker := exec.Command(bin.labctl, "broker", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", filepath.Join(dir, "broker"),
		"--identities", ids, "--tls-listen", fmt.Sprintf("127.0.0.1:%d", tlsPort), "--tls-cert", filepath.Join(ca, "broker.crt"),
		"--tls-key", filepath.Join(ca, "broker.key"), "--tls-client-ca", filepath.Join(ca, pki.CACert), "--controller=false")
	brokerLog, ctlLog := logFile(t, "broker.log"), logFile(t, "controller.log")
	broker.Stdout, broker.Stderr = brokerLog, brokerLog
	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopProcess(broker) })
	waitPort(t, tlsPort)
	files := map[string]string{
		cred + "mqtt-password":        filepath.Join(dir, "ctl.password"),
		cred + "tls-ca":               filepath.Join(ca, pki.CACert),
		cred + "tls-cert":             filepath.Join(ca, "ctl.crt"),
		cred + "tls-key":              filepath.Join(ca, "ctl.key"),
		"tls://mqtt.example.net:8883": fmt.Sprintf("tls://127.0.0.1:%d", tlsPort),
		"/var/lib/lab-controller":     filepath.Join(dir, "controller"),
	}
	args := ctl[1:]
	for i, a := range args {
		if f, ok := files[a]; ok {
			args[i] = f
		}
	}
	cmd := exec.Command(bin.labctl, args...)
	cmd.Env = withoutLabEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = ctlLog, ctlLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("controller log:\n%s\nbroker log:\n%s", readLog(t, ctlLog), readLog(t, brokerLog))
		}
	})
	// Running (it logs so once subscribed to requests), then it answers:
	// labctl rollout list asks it, as the operator.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(readLog(t, ctlLog), "controller service running") {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("the module's labctl controller command exited: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the module's labctl controller command is not running after 30s")
		}
	}
	q := exec.Command(bin.labctl, "rollout", "list", "--broker", fmt.Sprintf("mqtt://127.0.0.1:%d", port), "--username", "ops",
		"--password-file", filepath.Join(dir, "ops.password"))
	q.Env = append(withoutLabEnv(os.Environ()), "HOME="+dir, "XDG_STATE_HOME="+filepath.Join(dir, "state"))
	if out, err := q.CombinedOutput(); err != nil || strings.Contains(string(out), "no controller") {
		t.Fatalf("the module's labctl controller command does not answer labctl rollout list: %v\n%s", err, out)
	}
	// labctl controller key (docs/nixos.md) prints the key the service made.
	pub := strings.TrimSpace(labctl("controller", "key", "--controller-dir", filepath.Join(dir, "controller")))
	if _, err := proto.ParsePublicKey(pub); err != nil || !strings.Contains(readLog(t, ctlLog), pub) {
		t.Errorf("labctl controller key printed %q (%v); the service logged:\n%s", pub, err, readLog(t, ctlLog))
	}
}

// TestNixOSModulesGenerateTheWindow: the dashboard, alert and Home
// Assistant options (nix/modules/window.nix) become labctl's flags and a
// config file for the webhooks, on the broker (secrets read where they
// are) and on services.lab-controller (secrets as credentials); the real
// labctl broker accepts the command line and the file.
func TestNixOSModulesGenerateTheWindow(t *testing.T) {
	got := evalNixOSModules(t)
	if got.DefaultBrokerHasConfig || strings.Contains(got.BrokerExecStart, "--http") || strings.Contains(got.BrokerExecStart, "--config") {
		t.Errorf("a broker with the default window got a config file or --http: %q", got.BrokerExecStart)
	}
	args := execArgs(t, got.WindowBrokerExecStart)
	for flag, want := range map[string]string{"--http": ":8380", "--http-tls-cert": "/etc/lab/pki/dashboard.crt", "--http-tls-key": "/run/secrets/dashboard.key",
		"--alert-offline-after": "30m", "--config": "/etc/lab-broker/config.json"} {
		if v := flagValues(args, flag); len(v) != 1 || v[0] != want {
			t.Errorf("broker ExecStart %q: %s %v, want %s", got.WindowBrokerExecStart, flag, v, want)
		}
	}
	if !slices.Contains(args, "--homeassistant") || slices.Contains(args, "--homeassistant-prefix") {
		t.Errorf("broker ExecStart %q: want --homeassistant with the default prefix", got.WindowBrokerExecStart)
	}
	var bc struct {
		Controller struct {
			Alerts struct {
				Webhooks []map[string]any `json:"webhooks"`
			} `json:"alerts"`
		} `json:"controller"`
	}
	if err := json.Unmarshal([]byte(got.WindowBrokerConfig), &bc); err != nil {
		t.Fatal(err)
	}
	hooks := bc.Controller.Alerts.Webhooks
	if len(hooks) != 2 || hooks[0]["url"] != "https://ntfy.sh/lab-home" || hooks[0]["format"] != "ntfy" || hooks[0]["secret_file"] != nil ||
		hooks[1]["url_file"] != "/run/secrets/slack-url" || hooks[1]["secret_file"] != "/run/secrets/hook" || hooks[1]["url"] != nil {
		t.Errorf("/etc/lab-broker/config.json: %s", got.WindowBrokerConfig)
	}
	if len(got.WindowBrokerRestartTriggers) != 1 || got.WindowBrokerRestartTriggers[0] != got.WindowBrokerConfig {
		t.Errorf("restartTriggers %v: a changed webhook list must restart the broker", got.WindowBrokerRestartTriggers)
	}

	// services.lab-controller: the dashboard off, secrets as credentials.
	const cred = "/run/credentials/lab-controller.service/"
	ctl := execArgs(t, got.WindowControllerExecStart)
	if v := flagValues(ctl, "--http"); len(v) != 1 || v[0] != "" {
		t.Errorf("controller ExecStart %q: http.address = null wants --http \"\", got %v", got.WindowControllerExecStart, v)
	}
	if v := flagValues(ctl, "--homeassistant-prefix"); len(v) != 1 || v[0] != "ha" {
		t.Errorf("controller ExecStart %q: --homeassistant-prefix %v", got.WindowControllerExecStart, v)
	}
	if !strings.Contains(got.WindowControllerConfig, `"secret_file":"`+cred+`webhook-0-secret"`) ||
		!slices.Equal(got.WindowControllerLoadCredential, []string{"webhook-0-secret:/run/secrets/hook"}) {
		t.Errorf("controller: config %s, LoadCredential %v", got.WindowControllerConfig, got.WindowControllerLoadCredential)
	}
	if t.Failed() {
		return
	}

	// The real labctl broker accepts the line and the file, with the
	// files where this test put them.
	dir := t.TempDir()
	secret := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca := filepath.Join(dir, "pki")
	if err := pki.Init(ca, "test", 1); err != nil {
		t.Fatal(err)
	}
	if err := pki.Issue(ca, "dashboard", []string{"127.0.0.1"}, 1); err != nil {
		t.Fatal(err)
	}
	config := strings.NewReplacer("/run/secrets/slack-url", secret("slack-url", "https://hooks.slack.example/services/T/B/X\n"),
		"/run/secrets/hook", secret("hook", "s3cret\n")).Replace(got.WindowBrokerConfig)
	repl := map[string]string{
		"/var/lib/lab-broker/identities.yaml": secret("identities.yaml", "identities: []\n"),
		"/var/lib/lab-broker":                 filepath.Join(dir, "broker"),
		"/etc/lab/pki/dashboard.crt":          filepath.Join(ca, "dashboard.crt"),
		"/run/secrets/dashboard.key":          filepath.Join(ca, "dashboard.key"),
		"/etc/lab-broker/config.json":         secret("config.json", config),
	}
	line := args[1:]
	for i, a := range line {
		if r, ok := repl[a]; ok {
			line[i] = r
		}
	}
	out, err := exec.Command(bin.labctl, append(line, "--check-config")...).CombinedOutput()
	if err != nil {
		t.Fatalf("labctl broker refuses the module's window: %v\n%s", err, out)
	}
	// And a broken entry is refused by name.
	bad := secret("bad.json", strings.Replace(config, `"format":"ntfy"`, `"format":"teams"`, 1))
	for i, a := range line {
		if a == repl["/etc/lab-broker/config.json"] {
			line[i] = bad
		}
	}
	out, err = exec.Command(bin.labctl, append(line, "--check-config")...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "controller.alerts.webhooks[0].format") {
		t.Errorf("a bad webhook format: %v\n%s", err, out)
	}
}
