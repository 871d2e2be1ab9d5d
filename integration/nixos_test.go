package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lab-fleet/lab/internal/pki"
)

// The NixOS modules, evaluated with nixpkgs' own lib.evalModules (NixOS
// options they set declared by a stub): the unit and labd.yaml they
// generate, and the real labd accepting that configuration.
//
// It needs a copy of nixpkgs' lib/: NIXPKGS_LIB=/path/to/nixpkgs/lib (the
// nix-community/nixpkgs.lib repository is 8 MB).
func TestNixOSModulesGenerateAWorkingLabd(t *testing.T) {
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
	var got struct {
		LabdYaml             string   `json:"labdYaml"`
		LabdExecStart        string   `json:"labdExecStart"`
		LabdLoadCredential   []string `json:"labdLoadCredential"`
		LabdRestartIfChanged bool     `json:"labdRestartIfChanged"`
		LabdRestart          string   `json:"labdRestart"`
		BrokerExecStart      string   `json:"brokerExecStart"`
		Firewall             []int    `json:"firewall"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
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
