package nixfiles

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// Every .nix file of the repository parses (nix-instantiate --parse also
// catches undefined variables).
func TestNixFilesParse(t *testing.T) {
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		t.Skip("SKIPPED: nix-instantiate not found; install nix-bin (scripts/test does)")
	}
	files, err := filepath.Glob("*.nix")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("*/*.nix")
	files = append(files, more...)
	if len(files) == 0 {
		t.Fatal("no .nix files found")
	}
	for _, f := range files {
		if out, err := exec.Command("nix-instantiate", "--parse", f).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", f, err, out)
		}
	}
}
