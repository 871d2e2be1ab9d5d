package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/testbroker"
	"github.com/lab-fleet/lab/proto"
)

const (
	khEd  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKnownHostsTestN1"
	khRSA = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQKnownHostsTestN1+/="
	khEC  = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYKnownHostsTestN2="
)

// labctl inventory --known-hosts prints the host keys of the retained
// statuses as a NixOS module (which Nix evaluates to the knownHosts
// option's shape), as a known_hosts file and as JSON, and names the
// machines without keys on stderr.
func TestInventoryKnownHosts(t *testing.T) {
	clearBrokerEnv(t)
	b := testbroker.Start(t)
	for name, keys := range map[string][]string{"n1": {khEd, khRSA}, "n2": {khEC}, "n3": nil} {
		st := &proto.NodeStatus{Node: name, Execution: proto.Execution{State: proto.StateIdle}, UpdatedAt: time.Now().UnixMilli(), HostKeys: keys}
		st.Stamp(name, time.Now())
		publishRetained(t, b, proto.DefaultTopics.NodeStatus(name), st)
	}
	code, out, errOut := labctl(t, "inventory", "--known-hosts", "--broker", b.URL())
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	want := `# SSH host keys of the fleet, from each machine's retained status (labctl inventory --known-hosts).
{
  programs.ssh.knownHosts = {
    "n1" = { hostNames = [ "n1" ]; publicKey = "` + khEd + `"; };
    "n1-ssh-rsa" = { hostNames = [ "n1" ]; publicKey = "` + khRSA + `"; };
    "n2" = { hostNames = [ "n2" ]; publicKey = "` + khEC + `"; };
  };
}
`
	if out != want {
		t.Fatalf("nix format:\n%s\nwant:\n%s", out, want)
	}
	if !strings.Contains(errOut, "no SSH host keys reported by 1 machines") || !strings.Contains(errOut, "n3") {
		t.Errorf("stderr does not name n3:\n%s", errOut)
	}
	if _, err := exec.LookPath("nix-instantiate"); err == nil {
		file := filepath.Join(t.TempDir(), "known-hosts.nix")
		if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "--expr", "(import "+file+") .programs.ssh.knownHosts")
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "NIX_STATE_DIR="+t.TempDir())
		js, err := cmd.Output()
		if err != nil {
			t.Fatalf("nix-instantiate: %v", err)
		}
		var got map[string]struct {
			HostNames []string `json:"hostNames"`
			PublicKey string   `json:"publicKey"`
		}
		if err := json.Unmarshal(js, &got); err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || got["n1-ssh-rsa"].PublicKey != khRSA || !reflect.DeepEqual(got["n2"].HostNames, []string{"n2"}) {
			t.Fatalf("as Nix reads it: %s", js)
		}
	}

	code, out, _ = labctl(t, "inventory", "--known-hosts", "--format", "known_hosts", "--broker", b.URL())
	if want := "n1 " + khEd + "\nn1 " + khRSA + "\nn2 " + khEC + "\n"; code != 0 || out != want {
		t.Fatalf("known_hosts format: exit %d\n%s\nwant:\n%s", code, out, want)
	}
	code, out, _ = labctl(t, "inventory", "--known-hosts", "--json", "--broker", b.URL())
	var rows []hostKeysRow
	if err := json.Unmarshal([]byte(out), &rows); code != 0 || err != nil {
		t.Fatalf("json: exit %d %v\n%s", code, err, out)
	}
	if want := []hostKeysRow{{"n1", []string{khEd, khRSA}}, {"n2", []string{khEC}}}; !reflect.DeepEqual(rows, want) {
		t.Fatalf("json rows %+v, want %+v", rows, want)
	}

	for _, args := range [][]string{
		{"--known-hosts", "--format", "yaml"},
		{"--known-hosts", "--no-live"},
		{"--format", "known_hosts", "--flake", "."},
		{"--known-hosts", "--configurations", `a."${builtins.exec}"`},
		{"--flake", ".", "--configurations", "nixosConfigurations --impure"},
	} {
		if code, _, errOut := labctl(t, append(append([]string{"inventory"}, args...), "--broker", b.URL())...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d\n%s", args, code, exitUsage, errOut)
		}
	}
}

func TestNixString(t *testing.T) {
	if got := nixString(`a"b\c${d}` + "\n"); got != `"a\"b\\c\${d}\n"` {
		t.Fatalf("nixString = %s", got)
	}
}
