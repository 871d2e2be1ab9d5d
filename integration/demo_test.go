package integration

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// The README's first command: `labctl demo` on the embedded defaults, run
// as the built binary (its activation helper is the binary itself).
func TestDemoCommand(t *testing.T) {
	requireTools(t, "nix-build", "nix-store", "nix-env")
	cmd := exec.Command(bin.labctl, "demo", "--nodes", "3", "--dir", t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("labctl demo:\n%s", out.String())
	if err != nil {
		t.Fatalf("labctl demo: %v", err)
	}
	for _, want := range []string{"n1    succeeded", "n2    succeeded", "n3    rolled-back", "switch generation 2, switch generation 1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
