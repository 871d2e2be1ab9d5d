package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/lab-fleet/lab/"

type pkg struct {
	ImportPath string
	Doc        string
	Deps       []string
	Name       string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps=false", "-json", module+"...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

// forbidden maps a package prefix to the packages of ours it must not
// depend on, directly or not.
var forbidden = map[string][]string{
	"proto":        {"broker", "node", "controller", "internal", "cmd", "nix"},
	"node":         {"broker", "controller", "cmd"},
	"controller":   {"broker", "node", "cmd", "internal/render"},
	"broker":       {"node", "controller", "cmd"},
	"internal/bus": {"broker", "node", "controller", "cmd"},
	// render shows the controller's values; the controller never renders.
	"internal/render": {"broker", "node", "cmd"},
}

func TestDependenciesPointOneWay(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(p.ImportPath, module)
		for prefix, bad := range forbidden {
			if rel != prefix && !strings.HasPrefix(rel, prefix+"/") {
				continue
			}
			for _, d := range p.Deps {
				drel, ours := strings.CutPrefix(d, module)
				if !ours {
					continue
				}
				for _, b := range bad {
					if drel == b || strings.HasPrefix(drel, b+"/") {
						t.Errorf("%s depends on %s (rule: %s must not use %s)", rel, drel, prefix, b)
					}
				}
			}
		}
	}
}

func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range listPackages(t) {
		if p.Doc == "" {
			t.Errorf("%s has no package doc comment (add a doc.go)", p.ImportPath)
		}
	}
}
