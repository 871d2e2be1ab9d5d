package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestInputsFailBeforeConnecting: every input no broker could make right
// (store paths, NODE=PATH syntax, key, password and certificate files,
// durations, sizes, ids) is a usage error (exit 2) naming its flag, before
// anything is dialled: nothing listens on the broker URL given, so a
// command that tried to connect would fail on the connection instead.
func TestInputsFailBeforeConnecting(t *testing.T) {
	clearBrokerEnv(t)
	dir := t.TempDir()
	t.Chdir(dir)
	pub := filepath.Join(dir, "operator.pub")
	if err := os.WriteFile(pub, []byte("operator:AsJPAg9CLSex6cLN3gFVkOrTcYO0Q/iyQInVLoszPow=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.password")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const sp = "n1=/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x"
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"publish", "--toplevel", "n1=/tmp/does-not-exist"}, []string{"--toplevel n1=/tmp/does-not-exist", "not a /nix/store path"}},
		{[]string{"publish", "--toplevel", "n1"}, []string{"--toplevel n1", "write --toplevel n1=/nix/store/"}},
		{[]string{"publish", "--toplevel", "n1=/nix/store/foo"}, []string{"--toplevel n1=/nix/store/foo", "32-char hash"}},
		{[]string{"publish", "--toplevel", "n1="}, []string{`--toplevel "n1="`, "no store path"}},
		{[]string{"publish", "--toplevel", "Kitchen=/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x"}, []string{"--toplevel Kitchen=", `node name "Kitchen"`}},
		{[]string{"publish", "--toplevel", sp, "--toplevel", sp}, []string{"n1 is named twice"}},
		{[]string{"publish", "--toplevel", "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x"}, []string{"needs --on"}},
		{[]string{"publish"}, []string{"nothing to publish"}},
		{[]string{"publish", "--flake", ".", "--toplevel", sp}, []string{"--flake and --toplevel exclude each other"}},
		{[]string{"publish", "--toplevel", sp, "--key", pub}, []string{"--key", "holds the public key"}},
		{[]string{"publish", "--toplevel", sp, "--key", filepath.Join(dir, "none.key")}, []string{"--key", "no such file"}},
		{[]string{"publish", "--toplevel", sp, "--key", notPEM}, []string{"--key", "not an operator signing key"}},
		{[]string{"publish", "--toplevel", sp, "--timeout", "-1s"}, []string{"--timeout -1s is negative"}},
		{[]string{"publish", "--toplevel", sp, "--wave-deadline", "-5m"}, []string{"--wave-deadline -5m0s is negative"}},
		{[]string{"publish", "--toplevel", sp, "--confirm-timeout", "-1s"}, []string{"--confirm-timeout -1s is negative"}},
		{[]string{"publish", "--toplevel", sp, "--min-executed", "-1"}, []string{"--min-executed -1 is negative"}},
		{[]string{"publish", "--toplevel", sp, "--max-failures", "150%"}, []string{"--max-failures"}},
		{[]string{"publish", "--toplevel", sp, "--strategy", "rolling", "--batch", "x"}, []string{"--batch"}},
		{[]string{"publish", "--toplevel", sp, "--strategy", "blue-green"}, []string{`--strategy "blue-green"`}},
		{[]string{"publish", "--toplevel", sp, "--id", "r/1"}, []string{`--id "r/1"`}},
		{[]string{"publish", "--toplevel", sp, "--action", "reload"}, []string{`--action "reload"`}},
		{[]string{"publish", "--toplevel", sp, "--reboot", "sometimes"}, []string{`--reboot "sometimes"`}},
		{[]string{"publish", "--toplevel", sp, "--on-failure", "panic"}, []string{`--on-failure "panic"`}},
		{[]string{"publish", "--toplevel", sp, "--at", "tomorrow"}, []string{`--at "tomorrow"`}},
		{[]string{"publish", "--toplevel", sp, "--window", "2-5"}, []string{"--window"}},
		{[]string{"reboot", "--on", "n1", "--deadline", "-1m"}, []string{"--deadline -1m0s"}},
		{[]string{"reboot", "--on", "n1", "--id", "Big Job"}, []string{`--id "Big Job"`}},
		{[]string{"reboot", "--job", "a/b"}, []string{`--job "a/b"`}},
		{[]string{"rollout", "show", "r/1"}, []string{`rollout id "r/1"`}},
		{[]string{"rollout", "cancel", "r/1"}, []string{`rollout id "r/1"`}},
		{[]string{"rollout", "pause", "r/1"}, []string{`rollout id "r/1"`}},
		{[]string{"rollout", "resume", "r-1", "--timeout", "-1s"}, []string{"--timeout -1s is negative"}},
		{[]string{"rollout", "retry", "r-1", "--timeout", "-1s"}, []string{"--timeout -1s is negative"}},
		{[]string{"status", "--username", "alice", "--password-file", filepath.Join(dir, "none.password")}, []string{"--password-file", "no such file"}},
		{[]string{"status", "--username", "alice", "--password-file", empty}, []string{"--password-file", "is empty"}},
		{[]string{"status", "--tls-ca", notPEM}, []string{"--tls-ca", "holds no PEM certificate"}},
		{[]string{"status", "--tls-ca", filepath.Join(dir, "none.crt")}, []string{"--tls-ca", "no such file"}},
		{[]string{"status", "--tls-cert", notPEM}, []string{"--tls-cert and --tls-key go together"}},
		{[]string{"status", "--tls-cert", notPEM, "--tls-key", notPEM}, []string{"--tls-cert/--tls-key"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errOut strings.Builder
			args := append(tc.args, "--broker", "mqtt://127.0.0.1:1", "--rollouts-db", filepath.Join(dir, "rollouts.db"))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			code := run(ctx, args, &out, &errOut)
			msg := errOut.String()
			if code != 2 {
				t.Errorf("exit %d, want 2 (bad usage); stderr:\n%s", code, msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("stderr does not say %q:\n%s", w, msg)
				}
			}
			if strings.Contains(msg, "cannot connect") || strings.Contains(msg, "127.0.0.1:1") {
				t.Errorf("it tried the broker before refusing its input:\n%s", msg)
			}
		})
	}
}

// TestConfigTypos: a key no setting reads is refused (exit 2) by every
// command, naming the file and the key it most likely meant, before
// anything connects.
func TestConfigTypos(t *testing.T) {
	clearBrokerEnv(t)
	for _, tc := range []struct {
		content string
		want    string
	}{
		{"brokr: mqtt://127.0.0.1:1\n", `unknown key "brokr": did you mean "broker"?`},
		{"username: alice\npasword_file: /x\n", `unknown key "pasword_file": did you mean "password_file"?`},
		{"tls:\n  ca: /x\n  crt: /y\n", `unknown key "tls.crt": did you mean "tls.cert"?`},
		{"ca: /x\n", `unknown key "ca": did you mean "tls.ca"?`},
		{"colour = \"blue\"\n", `unknown key "colour": no setting has this name`},
	} {
		name := "labctl.yaml"
		if strings.Contains(tc.content, " = ") {
			name = "labctl.toml"
		}
		path := writeFile(t, name, tc.content)
		code, _, errOut := labctl(t, "--config", path, "status", "--broker", "mqtt://127.0.0.1:1")
		if code != 2 || !strings.Contains(errOut, path+": "+tc.want) {
			t.Errorf("%q: exit %d, want 2 saying %q:\n%s", tc.content, code, path+": "+tc.want, errOut)
		}
	}
}

// TestNodeAddFiles: node add makes its --out directory, and refuses a
// --pki directory without a CA before it writes anything.
func TestNodeAddFiles(t *testing.T) {
	dir := t.TempDir()
	ids := filepath.Join(dir, "identities.yaml")
	code, _, errOut := labctl(t, "node", "add", "n1", "--identities", ids, "--pki", filepath.Join(dir, "nopki"), "--out", filepath.Join(dir, "secrets"))
	if code != 2 || !strings.Contains(errOut, "no CA there") || !strings.Contains(errOut, "labctl pki init --dir") {
		t.Errorf("--pki without a CA: exit %d, want 2 saying how to make one:\n%s", code, errOut)
	}
	if _, err := os.Stat(ids); !os.IsNotExist(err) {
		t.Errorf("the refused node add wrote %s (%v)", ids, err)
	}
	out := filepath.Join(dir, "secrets", "new")
	if code, _, errOut := labctl(t, "node", "add", "n1", "--identities", ids, "--out", out); code != 0 {
		t.Fatalf("node add into a new --out directory: exit %d\n%s", code, errOut)
	}
	if fi, err := os.Stat(filepath.Join(out, "n1.password")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("n1.password: %v, mode %v; want it written with mode 0600", err, fi)
	}
}
