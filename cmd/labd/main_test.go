package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodConfig = `name: n1
groups: [web]
broker: mqtt://127.0.0.1:1883
state_dir: STATE
trusted_keys: ["op:3o0Hq4zY0m8oD2cR9c5m8oYv7jKxk3lJ9mZbZcN0Q1k="]
timeouts: {fetch: 45m}
machine: {reboot_order: 2, dependencies: [db]}
checks:
  - {name: web, type: http, url: "http://127.0.0.1:8080/healthz"}
`

// otherKey is a second valid public key (base64 of 32 bytes).
const otherKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

func checkConfig(t *testing.T, yaml string) (int, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "labd.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(yaml, "STATE", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"--config", path, "--check-config"}, &out, &errOut)
	return code, out.String() + errOut.String()
}

func TestCheckConfig(t *testing.T) {
	if code, out := checkConfig(t, goodConfig); code != 0 || !strings.Contains(out, "labd config ok: node n1") {
		t.Fatalf("good config: exit %d\n%s", code, out)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", goodConfig + "colour: blue\n", `labd.yaml: unknown key "colour": no setting has this name`},
		{"typo", goodConfig + "brokr: mqtt://127.0.0.1:1883\n", `labd.yaml: unknown key "brokr": did you mean "broker"?`},
		{"typo in a section", goodConfig + "tls:\n  crt: /x\n", `labd.yaml: unknown key "tls.crt": did you mean "tls.cert"?`},
		{"typo in a check", strings.Replace(goodConfig, "type: http", "tyep: http", 1), `unknown key "checks[0].tyep": did you mean "checks.type"?`},
		{"bad duration", strings.Replace(goodConfig, "fetch: 45m", "fetch: soon", 1), "timeouts.fetch"},
		{"missing name", strings.Replace(goodConfig, "name: n1\n", "", 1), "name"},
		{"bad broker", strings.Replace(goodConfig, "mqtt://127.0.0.1:1883", "http://x", 1), "broker[0]"},
		{"broker scheme a part of a known one", strings.Replace(goodConfig, "mqtt://127.0.0.1:1883", "qtt://127.0.0.1:1883", 1), `"qtt://127.0.0.1:1883" is not a broker URL`},
		{"bad trusted key", strings.Replace(goodConfig, "op:3o0Hq", "op:!!!", 1), "trusted_keys"},
		{"bad controller key", goodConfig + "controller_keys: [\"ctl:short\"]\n", "controller_keys[0]"},
		{"controller key id of an operator key", goodConfig + "controller_keys: [\"op:" + otherKey + "\"]\n", "controller_keys[0]"},
		{"bad check", strings.Replace(goodConfig, "type: http", "type: ftp", 1), "checks[0]"},
		{"bad dependency", strings.Replace(goodConfig, "[db]", "[DB!]", 1), "machine"},
		{"not yaml", "name: [unclosed\n", "labd.yaml"},
		{"relative textfile dir", goodConfig + "metrics: {textfile_dir: var/lib/node-exporter}\n", "metrics.textfile_dir: \"var/lib/node-exporter\" is not an absolute path"},
		{"textfile interval too short", goodConfig + "metrics: {textfile_dir: /tmp, textfile_interval: 10ms}\n", "metrics.textfile_interval: 10ms is less than 1s"},
		{"check interval not a duration", goodConfig + "check_interval: sometimes\n", `check_interval: "sometimes": want a duration such as 5m, or off`},
		{"check interval too short", goodConfig + "check_interval: 10ms\n", "check_interval: 10ms is less than 1s"},
		{"typo in metrics", goodConfig + "metrics: {textfile_dri: /tmp}\n", `unknown key "metrics.textfile_dri": did you mean "metrics.textfile_dir"?`},
	} {
		code, out := checkConfig(t, tc.yaml)
		if code != exitConfig || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d, want %d naming %q:\n%s", tc.name, code, exitConfig, tc.want, out)
		}
	}
}

// metrics.textfile_dir from the environment (LAB_METRICS_TEXTFILE_DIR)
// is validated like the file's.
func TestTextfileDirFromTheEnvironment(t *testing.T) {
	t.Setenv("LAB_METRICS_TEXTFILE_DIR", "relative/dir")
	if code, out := checkConfig(t, goodConfig); code != exitConfig || !strings.Contains(out, "metrics.textfile_dir") {
		t.Fatalf("exit %d, want %d naming metrics.textfile_dir:\n%s", code, exitConfig, out)
	}
	t.Setenv("LAB_METRICS_TEXTFILE_DIR", t.TempDir())
	if code, out := checkConfig(t, goodConfig); code != 0 {
		t.Fatalf("an existing directory: exit %d\n%s", code, out)
	}
}

func TestMissingConfigFile(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"--config", "/nonexistent/labd.yaml", "--check-config"}, &out, &errOut); code != exitConfig {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
}

// Without --config, a configuration the environment does not complete
// says that no file was given, not only which key is missing.
func TestCheckConfigWithoutConfigFile(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"--check-config"}, &out, &errOut)
	if code != exitConfig || !strings.Contains(errOut.String(), "no config file given (labd --config FILE)") {
		t.Fatalf("exit %d, want %d saying no config file was given:\n%s", code, exitConfig, errOut.String())
	}
}

// --check-config accepts what is valid but warns, on stderr and with exit
// 0, about what docs/labd.md promises a warning for: no trusted_keys (an
// unsigned Desired is accepted) and a system profile that does not exist.
func TestCheckConfigWarns(t *testing.T) {
	dir := t.TempDir()
	profile := filepath.Join(dir, "profiles", "system")
	unsigned := strings.Replace(goodConfig, `trusted_keys: ["op:3o0Hq4zY0m8oD2cR9c5m8oYv7jKxk3lJ9mZbZcN0Q1k="]`, "", 1)
	for _, tc := range []struct {
		name, yaml string
		want, not  []string
	}{
		{"no keys, no profile", unsigned + "profile: " + profile + "\n",
			[]string{"warning: no trusted_keys configured", "UNSIGNED", "system profile " + profile + " does not exist", "nix-env -p " + profile + " --set"}, nil},
		{"controller keys only", unsigned + "controller_keys: [\"ctl:" + otherKey + "\"]\nprofile: " + dir + "\n",
			[]string{"warning: controller_keys but no trusted_keys configured", "every desired state is REJECTED"}, []string{"UNSIGNED"}},
		{"an operator key repeated as a controller key", goodConfig + "controller_keys: [\"op:3o0Hq4zY0m8oD2cR9c5m8oYv7jKxk3lJ9mZbZcN0Q1k=\"]\nprofile: " + dir + "\n",
			[]string{`warning: key "op" is in both trusted_keys and controller_keys`}, nil},
		{"a textfile directory that does not exist", goodConfig + "profile: " + dir + "\nmetrics: {textfile_dir: " + filepath.Join(dir, "nx") + "}\n",
			[]string{"warning: metrics.textfile_dir " + filepath.Join(dir, "nx") + " does not exist"}, nil},
		{"keys and a profile", goodConfig + "controller_keys: [\"ctl:" + otherKey + "\"]\nprofile: " + dir + "\n", nil, []string{"warning"}},
	} {
		path := filepath.Join(dir, "labd.yaml")
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(tc.yaml, "STATE", dir)), 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		code := run(context.Background(), []string{"--config", path, "--check-config"}, &out, &errOut)
		if code != 0 || !strings.Contains(out.String(), "labd config ok") {
			t.Errorf("%s: exit %d, want 0 and ok:\n%s%s", tc.name, code, out.String(), errOut.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut.String(), w) {
				t.Errorf("%s: stderr does not say %q:\n%s", tc.name, w, errOut.String())
			}
		}
		for _, w := range tc.not {
			if strings.Contains(errOut.String(), w) {
				t.Errorf("%s: stderr says %q:\n%s", tc.name, w, errOut.String())
			}
		}
	}
}
