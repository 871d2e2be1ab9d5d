package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// A fleet that a cluster layer assembles (clan, flake-parts) keeps its
// machines under another attribute: `--configurations` reads them there
// for inventory and publish, and the machines' SSH host keys, reported by
// the real labd, come back as a known_hosts file.
func TestFleetUnderAnotherAttributePath(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2"}, nil)
	keys := filepath.Join(f.Dir, "n1-ssh")
	if err := os.MkdirAll(keys, 0o755); err != nil {
		t.Fatal(err)
	}
	const hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIntegrationHostKeyOfN1"
	if err := os.WriteFile(filepath.Join(keys, "ssh_host_ed25519_key.pub"), []byte(hostKey+" root@n1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.nodes[0].appendConfig("ssh_host_keys: " + filepath.Join(keys, "ssh_host_*_key.pub") + "\n")
	f.nodes[1].appendConfig("ssh_host_keys: " + filepath.Join(f.Dir, "n2-has-no-ssh", "*.pub") + "\n")
	f.startAll()
	ref := writeFleetFlake(t, f.Env, 3, map[string]string{"n1": `{ groups = [ "web" ]; }`, "n2": `{ groups = [ "web" ]; }`})
	flakeFile := filepath.Join(strings.TrimPrefix(ref, "path:"), "flake.nix")
	b, err := os.ReadFile(flakeFile)
	if err != nil {
		t.Fatal(err)
	}
	moved := strings.Replace(string(b), "nixosConfigurations = {", "nixosConfigurations = { };\n    clan.nixosConfigurations = {", 1)
	if err := os.WriteFile(flakeFile, []byte(moved), 0o644); err != nil {
		t.Fatal(err)
	}
	const attr = "clan.nixosConfigurations"

	code, out, errOut := f.Labctl("inventory", "--flake", ref, "--json")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("nixosConfigurations is empty: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = f.Labctl("inventory", "--flake", ref, "--configurations", attr, "--json")
	var rows []struct{ Name, Live string }
	if err := json.Unmarshal([]byte(out), &rows); code != 0 || err != nil {
		t.Fatalf("inventory --configurations: exit %d %v\n%s%s", code, err, out, errOut)
	}
	if len(rows) != 2 || rows[0].Name != "n1" || rows[0].Live != "behind" || rows[1].Name != "n2" {
		t.Fatalf("inventory --configurations: %+v", rows)
	}
	code, out, errOut = f.Labctl("publish", "--id", "r-clan", "--key", f.KeyFile, "--flake", ref, "--configurations", attr, "--timeout", "90s")
	if code != exitSucceeded {
		t.Fatalf("publish --configurations exit %d\n%s%s", code, out, errOut)
	}
	for _, n := range []string{"n1", "n2"} {
		st := f.Watch().AwaitState(t, n, "r-clan", proto.StateSucceeded, 10*time.Second)
		if !strings.HasSuffix(st.Execution.Toplevel, "-nixos-system-"+n+"-3") {
			t.Errorf("%s runs %s", n, st.Execution.Toplevel)
		}
	}

	code, out, errOut = f.Labctl("inventory", "--known-hosts", "--format", "known_hosts", "--flake", ref, "--configurations", attr)
	if code != 0 || out != "n1 "+hostKey+"\n" || !strings.Contains(errOut, "n2") {
		t.Fatalf("known_hosts: exit %d\n%s\nstderr:\n%s", code, out, errOut)
	}
}
