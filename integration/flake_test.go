package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// writeFleetFlake writes a flake with no inputs declaring the nodes as
// NixOS-shaped configurations: lab.machine metadata and a fake system of
// generation gen as system.build.toplevel.
func writeFleetFlake(t *testing.T, e *Env, gen int, machines map[string]string) string {
	t.Helper()
	dir := filepath.Join(e.Dir, fmt.Sprintf("flake-%d", gen))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(e.Dir, "fake-system.nix"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fake-system.nix"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	var cfgs strings.Builder
	for name, meta := range machines {
		fmt.Fprintf(&cfgs, "      %s = { config = { lab.machine = %s; system.build.toplevel = import ./fake-system.nix { name = %q; gen = %d; system = \"x86_64-linux\"; }; }; };\n", name, meta, name, gen)
	}
	flake := "{\n  outputs = { self }: {\n    nixosConfigurations = {\n" + cfgs.String() + "    };\n  };\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(flake), 0o644); err != nil {
		t.Fatal(err)
	}
	return "path:" + dir
}

// The flake is the inventory: `labctl inventory` shows who is behind, and
// `labctl publish --flake` evaluates, builds and rolls out in the order the
// flake's lab.machine options give.
func TestPublishFromAFlake(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2", "n3"}, nil)
	f.startAll()
	ref := writeFleetFlake(t, f.Env, 3, map[string]string{
		"n1": `{ groups = [ "web" ]; dependencies = [ "n2" ]; }`,
		"n2": `{ groups = [ "web" ]; }`,
		"n3": `{ groups = [ "db" ]; }`,
	})
	code, out, errOut := f.Labctl("inventory", "--flake", ref, "--json")
	if code != 0 {
		t.Fatalf("inventory exit %d\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "evaluated 3 machines") {
		t.Errorf("inventory does not say it evaluated once:\n%s", errOut)
	}
	var rows []struct {
		Name, Toplevel, Live string
		Dependencies         []string
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, r := range rows {
		if r.Live != "behind" || !strings.HasSuffix(r.Toplevel, "-nixos-system-"+r.Name+"-3") {
			t.Errorf("before: %+v", r)
		}
	}
	code, out, errOut = f.Labctl("publish", "--id", "r-flake", "--key", f.KeyFile, "--flake", ref, "--on", "@web", "--timeout", "90s")
	if code != exitSucceeded {
		t.Fatalf("publish --flake exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "building 2 systems in one nix build") {
		t.Errorf("publish did not build once:\n%s", errOut)
	}
	n1 := f.Watch().AwaitState(t, "n1", "r-flake", proto.StateSucceeded, 10*time.Second)
	n2 := f.Watch().AwaitState(t, "n2", "r-flake", proto.StateSucceeded, 10*time.Second)
	if n1.Execution.Since < n2.Execution.Since {
		t.Errorf("n1 (depends on n2) finished before n2")
	}
	if len(f.nodes[2].Switches()) != 0 {
		t.Errorf("n3 is not in @web but switched")
	}
	code, out, _ = f.Labctl("inventory", "--flake", ref)
	if code != 0 || !strings.Contains(out, "up-to-date") || !strings.Contains(out, "behind") {
		t.Errorf("inventory after: exit %d\n%s", code, out)
	}
}

// A machine that does not evaluate is named, with Nix's message, and
// nothing is published.
func TestFlakeEvaluationErrorNamesTheMachine(t *testing.T) {
	f := newFleet(t, []string{"n1"}, nil)
	f.startAll()
	ref := writeFleetFlake(t, f.Env, 3, map[string]string{"n1": `{ groups = [ "web" ]; }`, "bad": `(throw "bad: no disk layout")`})
	code, _, errOut := f.Labctl("publish", "--key", f.KeyFile, "--flake", ref)
	if code == 0 || !strings.Contains(errOut, "bad:") || !strings.Contains(errOut, "no disk layout") {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	if len(f.nodes[0].Switches()) != 0 {
		t.Error("n1 switched although the flake does not evaluate")
	}
}
