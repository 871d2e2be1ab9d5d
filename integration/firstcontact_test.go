package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// firstContactDeadline bounds each command of TestFirstContactErrors. A
// connection labctl waits for gives up after 15 s; every case here must
// end well before that, because retrying cannot fix it.
const firstContactDeadline = 12 * time.Second

// TestFirstContactErrors: what a new user gets wrong on the first day ends
// the command within seconds with one line that names the cause and the
// fix — the wrong port, the wrong password, a foreign CA on either side,
// plain MQTT against TLS, a bad store path, a typo in the config — and
// labd says the same in its log, fixes itself when the password file is
// fixed, and reports the failed attempts in its status.
func TestFirstContactErrors(t *testing.T) {
	e := NewEnv(t)
	ca, other := filepath.Join(e.Dir, "pki"), filepath.Join(e.Dir, "other-pki")
	ids := filepath.Join(e.Dir, "identities.yaml")
	for _, args := range [][]string{
		{"pki", "init", "--dir", ca},
		{"pki", "issue", "broker", "--dir", ca, "--host", "127.0.0.1"},
		{"pki", "init", "--dir", other},
		{"pki", "issue", "ops", "--dir", other},
		{"node", "add", "n1", "--groups", "web", "--identities", ids, "--out", e.Dir},
		{"node", "add", "ops", "--role", "controller", "--identities", ids, "--out", e.Dir},
	} {
		if code, out, errOut := e.Labctl(args...); code != 0 {
			t.Fatalf("labctl %v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	tlsPort := freePort(t)
	e.startBrokerArgs("--identities", ids, "--tls-listen", fmt.Sprintf("127.0.0.1:%d", tlsPort),
		"--tls-cert", filepath.Join(ca, "broker.crt"), "--tls-key", filepath.Join(ca, "broker.key"), "--tls-client-ca", filepath.Join(ca, "ca.crt"))
	waitPort(t, tlsPort)
	e.watch = newWatcher(t, e.BrokerURL(), "ops", readTrimmed(t, filepath.Join(e.Dir, "ops.password")))
	tlsURL := fmt.Sprintf("tls://127.0.0.1:%d", tlsPort)
	wrongPW := filepath.Join(e.Dir, "wrong.password")
	if err := os.WriteFile(wrongPW, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	typo := filepath.Join(e.Dir, "labctl.yaml")
	if err := os.WriteFile(typo, []byte("brokr: "+e.BrokerURL()+"\nusername: ops\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opsPW := filepath.Join(e.Dir, "ops.password")

	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"wrong port", []string{"status", "--broker", fmt.Sprintf("mqtt://127.0.0.1:%d", freePort(t))}, 1,
			[]string{"cannot connect to mqtt://127.0.0.1:", "connection refused", "--broker"}},
		{"wrong password", []string{"status", "--username", "ops", "--password-file", wrongPW}, 1,
			[]string{`as "ops"`, "bad user name or password", "0x86", "--password-file"}},
		{"broker certificate from a foreign CA", []string{"status", "--broker", tlsURL, "--username", "ops", "--password-file", opsPW, "--tls-ca", filepath.Join(other, "ca.crt")}, 1,
			[]string{tlsURL, "signed by an authority this client does not trust", "--tls-ca"}},
		{"client certificate from a foreign CA", []string{"status", "--broker", tlsURL, "--tls-ca", filepath.Join(ca, "ca.crt"),
			"--tls-cert", filepath.Join(other, "ops.crt"), "--tls-key", filepath.Join(other, "ops.key")}, 1,
			[]string{"the broker refused this client's certificate", "--tls-cert"}},
		{"plain MQTT against the TLS listener", []string{"status", "--broker", fmt.Sprintf("mqtt://127.0.0.1:%d", tlsPort), "--username", "ops", "--password-file", opsPW}, 1,
			[]string{"use tls://"}},
		{"bad store path", []string{"publish", "--username", "ops", "--password-file", opsPW, "--key", e.KeyFile, "--toplevel", "n1=/tmp/foo"}, 2,
			[]string{"--toplevel n1=/tmp/foo", "not a /nix/store path"}},
		{"node name without a path", []string{"publish", "--username", "ops", "--password-file", opsPW, "--key", e.KeyFile, "--toplevel", "n1"}, 2,
			[]string{"write --toplevel n1=/nix/store/"}},
		{"typo in the config", []string{"--config", typo, "status"}, 2,
			[]string{typo + `: unknown key "brokr": did you mean "broker"?`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, errOut, took := runBounded(t, e, bin.labctl, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\n%s", code, tc.code, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr does not say %q:\n%s", w, errOut)
				}
			}
			if lines := strings.Count(strings.TrimSpace(errOut), "\n") + 1; lines > 2 {
				t.Errorf("%d lines on stderr, want the one that says it (and at most a warning):\n%s", lines, errOut)
			}
			t.Logf("ended after %s: %s", took.Round(time.Millisecond), strings.TrimSpace(errOut))
		})
	}

	// labd with the wrong password: --check-connect says so (exit 3) and
	// names the key to fix; the running labd logs it in words, connects
	// by itself once the file is fixed, and its status tells what came
	// before the connection.
	n := e.NewNode("n1", []string{"web"}, e.Build("n1", 1))
	pw := filepath.Join(e.Dir, "n1-labd.password")
	if err := os.WriteFile(pw, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.appendConfig(fmt.Sprintf("password_file: %q\n", pw))
	e.DumpOnFailure(n)
	code, errOut, _ := runBounded(t, e, bin.labd, "--config", n.Config, "--check-config", "--check-connect")
	if code != 3 || !strings.Contains(errOut, "bad user name or password") || !strings.Contains(errOut, "check password_file") {
		t.Fatalf("labd --check-connect with a wrong password: exit %d, want 3 naming password_file:\n%s", code, errOut)
	}
	n.Start()
	eventually(t, 20*time.Second, "labd logs the refusal in words", func() bool {
		log := n.Log()
		return strings.Contains(log, "bad user name or password") && strings.Contains(log, "check password_file")
	})
	if strings.Contains(n.Log(), "reason: 134") {
		t.Errorf("labd logs the bare reason code:\n%s", n.Log())
	}
	good, err := os.ReadFile(filepath.Join(e.Dir, "n1.password"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pw, good, 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "n1 connects once its password file is fixed (no restart)", func() bool { return e.Watch().Online("n1") })
	eventually(t, 10*time.Second, "n1's status tells of the failed attempts", func() bool {
		st, ok := e.Watch().Status("n1")
		return ok && st.Connect != nil && st.Connect.Attempts > 0 && strings.Contains(st.Connect.Error, "bad user name or password")
	})
	st, _ := e.Watch().Status("n1")
	if st.Connect.Since > st.Connect.Until || st.Connect.Until == 0 {
		t.Errorf("connect trouble %+v: want first ≤ last attempt", *st.Connect)
	}
	code, out, errOut := e.Labctl("status", "--username", "ops", "--password-file", opsPW)
	if code != 0 || !strings.Contains(out+errOut, "n1 connected after") {
		t.Errorf("labctl status: exit %d, want a note on n1's failed attempts:\n%s%s", code, out, errOut)
	}
	code, errOut, _ = runBounded(t, e, bin.labd, "--config", n.Config, "--check-config", "--check-connect")
	if code != 0 || !strings.Contains(errOut, "accepted node n1") {
		t.Errorf("labd --check-connect with the right password: exit %d, want 0:\n%s", code, errOut)
	}
}

// runBounded runs a command with firstContactDeadline and returns its exit
// code, its output (stdout then stderr) and how long it took; a command
// still running at the deadline fails the test.
func runBounded(t *testing.T, e *Env, name string, args ...string) (int, string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), firstContactDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), e.NixEnv...)
	cmd.Env = append(cmd.Env, "LAB_BROKER="+e.BrokerURL(), "LAB_ROLLOUTS_DB="+filepath.Join(e.Dir, "rollouts.db"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("%s %v still running after %s: a first-contact error must end the command at once\n%s", filepath.Base(name), args, firstContactDeadline, out.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return code, out.String(), took
}

func readTrimmed(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
