package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// twin is a second labd with n's name (the same MQTT client id) on a
// machine of its own: its own directory, profile and state, installed
// with the same system. extra is appended to its config.
func (n *Node) twin(extra string) *Node {
	e := n.env
	e.t.Helper()
	dir := n.Dir + "-twin"
	t := &Node{env: e, Name: n.Name, Dir: dir, Profile: filepath.Join(dir, "profiles", "system"), Config: filepath.Join(dir, "labd.yaml")}
	for _, d := range []string{filepath.Dir(t.Profile), filepath.Join(dir, "state")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			e.t.Fatal(err)
		}
	}
	if cur := n.Current(); cur != "" {
		if out, err := e.command("nix-env", "-p", t.Profile, "--set", cur).CombinedOutput(); err != nil {
			e.t.Fatalf("nix-env --set: %v\n%s", err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "boot_id"), []byte("boot-twin\n"), 0o644); err != nil {
		e.t.Fatal(err)
	}
	b, err := os.ReadFile(n.Config)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(t.Config, []byte(strings.ReplaceAll(string(b), n.Dir+"/", dir+"/")+extra), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(t.Stop)
	return t
}

func countLines(s, substr string) int {
	k := 0
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			k++
		}
	}
	return k
}

// Two labd with the same name: each takeover of the session is logged
// with a warning that names the node, and the one thrown out backs off
// instead of taking the session back at once. Once the duplicate is gone
// the real one is online again with its own status, and stays online.
func TestDuplicateNodeNameBacksOff(t *testing.T) {
	f := newFleet(t, []string{"n1"}, nil)
	real := f.nodes[0]
	f.startAll()
	dup := real.twin("machine: {role: twin}\n")
	f.DumpOnFailure(real, dup)
	dup.Start()
	eventually(t, 30*time.Second, "the duplicate's status", func() bool {
		s, _ := f.Watch().Status("n1")
		return s.Machine.Role == "twin"
	})
	time.Sleep(8 * time.Second)
	logs := real.Log() + dup.Log()
	// Without a backoff the two throw each other out many times a second.
	// With it: about 1 s, 1 s, 2 s, 2 s, 4 s apart.
	c := countLines(logs, "connected to the broker")
	t.Logf("%d connections of the two labd", c)
	if c > 9 {
		t.Errorf("%d connections in about 8 s: the two labd do not back off", c)
	}
	// The embedded broker says why (MQTT reason 0x8E); mosquitto 2.0 only
	// closes the connection.
	said := strings.Contains(logs, "another client with the same id connected") || strings.Contains(logs, "the broker closed the connection right after it opened")
	if !said || !strings.Contains(logs, "is a second labd running with name n1?") {
		t.Errorf("no warning naming the duplicate:\n%s", tail(logs, 3000))
	}
	dup.Stop()
	start := time.Now()
	eventually(t, 70*time.Second, "the real n1 back online with its own status", func() bool {
		s, _ := f.Watch().Status("n1")
		return f.Watch().Online("n1") && s.Machine.Role == ""
	})
	t.Logf("the real n1 was back %s after the duplicate stopped", time.Since(start).Round(100*time.Millisecond))
	// A Last Will of a connection it threw out must not leave it offline.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if !f.Watch().Online("n1") {
			t.Fatal("the real n1 shows offline although it is connected")
		}
	}
}
