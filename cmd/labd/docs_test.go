package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lab-fleet/lab/internal/doccheck"
)

// TestDocsCommandsRun: every labd command line the docs print (README,
// docs/*.md, labd --help) uses flags labd has and no arguments.
func TestDocsCommandsRun(t *testing.T) {
	root := newRootCmd(new(strings.Builder), new(strings.Builder))
	var all []doccheck.Invocation
	pages, _ := filepath.Glob(filepath.Join("..", "..", "docs", "*.md"))
	for _, p := range append(pages, filepath.Join("..", "..", "README.md")) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, doccheck.Markdown(strings.TrimPrefix(p, "../../"), string(b), "labd")...)
	}
	all = append(all, doccheck.Examples(root, "labd")...)
	if len(all) < 5 {
		t.Fatalf("found only %d labd command lines in the docs: the scanner is broken", len(all))
	}
	t.Logf("%d labd command lines", len(all))
	for _, inv := range all {
		if err := doccheck.Check(root, inv); err != nil {
			t.Errorf("%s: %s\n\t%s", inv.Where, err, inv.Text)
		}
	}
}
