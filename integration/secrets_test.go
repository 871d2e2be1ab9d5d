package integration

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// A rollout that needs a secret (docs/secrets.md, "Rollouts that need
// secrets"), with real labd, real Nix and the env's broker (labctl broker,
// or mosquitto with its exported ACL in the mosquitto pass): the new
// system declares db-password, mode 0440 (a fake toplevel with
// etc/lab/secrets.json), the machine waits for it, fetching, and says so;
// labctl secret set delivers it with another mode, the machine still waits,
// saying why; set again as declared, and the rollout goes on and succeeds. The plaintext is in
// the secret's file and nowhere else: not in the broker's data directory,
// labd's state or logs, nor in any store path the test made.
func TestRolloutWaitsForItsSecret(t *testing.T) {
	e := NewEnv(t)
	e.StartBroker()
	gen1 := e.Build("n1", 1)
	gen2 := e.Build("n1", 2, "--arg", "secrets", `{ db-password = { mode = "0440"; restart_units = [ "app.service" ]; }; }`)
	if b, err := os.ReadFile(filepath.Join(gen2, "etc/lab/secrets.json")); err != nil || string(b) != `{"db-password":{"mode":"0440","restart_units":["app.service"]}}` {
		t.Fatalf("the new system's etc/lab/secrets.json: %q, %v", b, err)
	}
	n := e.NewNode("n1", []string{"web"}, gen1)
	secrets := filepath.Join(n.Dir, "secrets")
	appendFile(t, n.Config, "secrets:\n  dir: "+secrets+"\n  identity_file: "+filepath.Join(n.Dir, "no-ssh-host-key")+
		"\n  restart_command: [sh, -c, 'echo \"$0\" >> "+filepath.Join(n.Dir, "restarts")+"']\n")
	e.DumpOnFailure(n)
	e.startNodes([]*Node{n})
	eventually(t, 10*time.Second, "n1's recipient in its status", func() bool {
		s, ok := e.Watch().Status("n1")
		return ok && s.Recipient != ""
	})

	start := time.Now()
	if code, _, _ := e.Labctl("publish", "--id", "r-secret", "--key", e.KeyFile, "--toplevel", "n1="+gen2, "--no-wait"); code != 0 {
		t.Fatalf("publish exit %d", code)
	}
	eventually(t, 10*time.Second, "n1 fetching, waiting for secret db-password", func() bool {
		s, ok := e.Watch().Status("n1")
		return ok && s.Execution.Rollout == "r-secret" && s.Execution.State == proto.StateFetching && s.Execution.Error == "waiting for secret db-password"
	})
	if evs := eventsSaying(e.Watch().Events("n1"), "waiting for secret db-password"); evs == 0 {
		t.Error("no event says the node waits for db-password")
	}
	// The status table shows the state only; its JSON says what for.
	if code, out, _ := e.Labctl("status", "--json"); code != 0 || !strings.Contains(out, `"error": "waiting for secret db-password"`) {
		t.Errorf("labctl status --json (exit %d) does not say what n1 waits for:\n%s", code, out)
	}
	if n.Current() != gen1 || len(n.Switches()) != 0 {
		t.Fatalf("while waiting: profile at %s, switches %v; want nothing changed", n.Current(), n.Switches())
	}

	plain := fmt.Sprintf("db-plaintext-%d-%d", os.Getpid(), time.Now().UnixNano())
	file := filepath.Join(e.Dir, "db-password")
	if err := os.WriteFile(file, []byte(plain), 0o600); err != nil {
		t.Fatal(err)
	}
	// Set without the mode the system declares: in place, but the
	// rollout waits on, saying what differs; set again as declared.
	if code, _, _ := e.Labctl("secret", "set", "n1", "db-password", "--file", file, "--key", e.KeyFile, "--restart", "app.service"); code != 0 {
		t.Fatalf("secret set exit %d", code)
	}
	eventually(t, 10*time.Second, "n1 waiting for db-password with mode 0440", func() bool {
		s, ok := e.Watch().Status("n1")
		return ok && s.Execution.State == proto.StateFetching && strings.Contains(s.Execution.Error, "with mode 0440, as the new system declares (it has mode 0400")
	})
	if code, _, _ := e.Labctl("secret", "set", "n1", "db-password", "--file", file, "--key", e.KeyFile, "--restart", "app.service", "--mode", "0440"); code != 0 {
		t.Fatalf("secret set exit %d", code)
	}
	if err := os.Remove(file); err != nil { // from here on, only labd's copy holds it
		t.Fatal(err)
	}
	s := e.Watch().AwaitState(t, "n1", "r-secret", proto.StateSucceeded, 10*time.Second)
	if n.Current() != gen2 || s.Current != gen2 {
		t.Errorf("profile at %s (status %s), want %s", n.Current(), s.Current, gen2)
	}
	if b, err := os.ReadFile(filepath.Join(secrets, "db-password")); err != nil || string(b) != plain {
		t.Errorf("secret file: %q, %v", b, err)
	}
	t.Logf("waited, got the secret and rolled out in %s", time.Since(start).Round(time.Millisecond))
	if fi, err := os.Stat(filepath.Join(secrets, "db-password")); err != nil || fi.Mode().Perm() != 0o440 {
		t.Errorf("secret file: %v, %v; want mode 0440", fi, err)
	}
	if b, _ := os.ReadFile(filepath.Join(n.Dir, "restarts")); string(b) != "app.service\napp.service\n" {
		t.Errorf("units restarted: %q, want app.service for each version", b)
	}
	// Nor anywhere else the test's processes write: the broker's data
	// directory, labd's state directory and logs (all under e.Dir); only
	// the secret's own file holds it.
	err := filepath.WalkDir(e.Dir, func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && p == secrets:
			return filepath.SkipDir
		case d.Type().IsRegular():
			if where := holds(t, p, []byte(plain)); where != "" {
				t.Errorf("the plaintext is in %s", where)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Not in the store: the systems, their derivations, or anything the
	// test's Nix built (the fake systems' closures are these paths).
	var paths []string
	for _, p := range []string{gen1, gen2} {
		out, err := e.command("nix-store", "-qR", "--include-outputs", derivationOf(t, e, p)).Output()
		if err != nil {
			t.Fatalf("nix-store -qR: %v\n%s", err, stderrOf(err))
		}
		paths = append(paths, strings.Fields(string(out))...)
	}
	for _, p := range paths {
		if where := holds(t, p, []byte(plain)); where != "" {
			t.Errorf("the plaintext is in the store: %s", where)
		}
	}
	if holds(t, gen2, []byte("25.05.2-fake")) == "" {
		t.Error("the search does not find what gen 2 holds (its nixos-version)")
	}
	if len(paths) < 4 {
		t.Errorf("searched only %v", paths)
	}
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

func eventsSaying(evs []proto.Event, want string) int {
	n := 0
	for _, ev := range evs {
		if strings.Contains(ev.Detail, want) {
			n++
		}
	}
	return n
}

func derivationOf(t *testing.T, e *Env, p string) string {
	t.Helper()
	out, err := e.command("nix-store", "-q", "--deriver", p).Output()
	if err != nil {
		t.Fatalf("nix-store -q --deriver %s: %v\n%s", p, err, stderrOf(err))
	}
	return strings.TrimSpace(string(out))
}

// holds names the first file under root (a file or a directory) that
// contains b, "" if none does.
func holds(t *testing.T, root string, b []byte) string {
	t.Helper()
	found := ""
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || found != "" || !d.Type().IsRegular() {
			return err
		}
		c, err := os.ReadFile(p)
		if err == nil && bytes.Contains(c, b) {
			found = p
		}
		return err
	})
	if err != nil {
		t.Fatalf("searching %s: %v", root, err)
	}
	return found
}
