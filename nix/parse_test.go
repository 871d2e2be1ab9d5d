package nixfiles

import (
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Every .nix file of the repository parses (nix-instantiate --parse also
// catches undefined variables): the modules, the flakes at the root and in
// examples/, the fake system.
func TestNixFilesParse(t *testing.T) {
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		t.Skip("SKIPPED: nix-instantiate not found; install nix-bin (scripts/test does)")
	}
	var files []string
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "vendor") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".nix") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"../flake.nix", "../nix/fake-system.nix", "../examples/fleet/flake.nix"} {
		found := false
		for _, f := range files {
			found = found || filepath.Clean(f) == filepath.Clean(want)
		}
		if !found {
			t.Errorf("%s not found among %v", want, files)
		}
	}
	for _, f := range files {
		if out, err := exec.Command("nix-instantiate", "--parse", f).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", f, err, out)
		}
	}
	t.Logf("%d .nix files parse", len(files))
}
