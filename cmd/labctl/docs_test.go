package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lab-fleet/lab/internal/configkeys"
	"github.com/lab-fleet/lab/internal/doccheck"
)

// docBlockRE matches the fenced YAML and TOML blocks of a Markdown page.
var docBlockRE = regexp.MustCompile("(?s)```(yaml|toml)\n(.*?)```")

// TestDocsExamples reads every config file of docs/labctl.md as labctl
// does: each names a broker to dial and spells the broker section's keys
// as labctl broker knows them.
func TestDocsExamples(t *testing.T) {
	clearBrokerEnv(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "labctl.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := docBlockRE.FindAllStringSubmatch(string(b), -1)
	if len(blocks) < 3 {
		t.Fatalf("docs/labctl.md: %d config examples, want 3", len(blocks))
	}
	wantURL := regexp.MustCompile(`(?m)^\s*(?:broker|url)\s*[:=]\s*"?([a-z]+://[^"\s]+)`)
	for i, blk := range blocks {
		path := filepath.Join(t.TempDir(), "labctl."+blk[1])
		if err := os.WriteFile(path, []byte(blk[2]), 0o600); err != nil {
			t.Fatal(err)
		}
		g := newGlobals(new(strings.Builder), new(strings.Builder))
		g.v.SetConfigFile(path)
		if err := g.v.ReadInConfig(); err != nil {
			t.Fatalf("example %d: %v\n%s", i, err, blk[2])
		}
		urls, err := g.brokerURLs()
		m := wantURL.FindStringSubmatch(blk[2])
		if err != nil || m == nil || len(urls) != 1 || urls[0] != m[1] {
			t.Errorf("example %d dials %v (%v), want the URL it names\n%s", i, urls, err, blk[2])
		}
		if _, err := brokerConfig(g.v); err != nil {
			t.Errorf("example %d: %v", i, err)
		}
		if err := configkeys.Unknown("docs/labctl.md", g.v.AllKeys(), configKeys()); err != nil {
			t.Errorf("example %d: %v", i, err)
		}
	}
}

// TestDocsCommandsRun: every labctl command line the docs print (README,
// docs/*.md, and every command's --help examples) names a command that
// exists, with flags it has and as many arguments as it takes.
func TestDocsCommandsRun(t *testing.T) {
	root := newRootCmd(newGlobals(new(strings.Builder), new(strings.Builder)))
	var all []doccheck.Invocation
	pages, _ := filepath.Glob(filepath.Join("..", "..", "docs", "*.md"))
	for _, p := range append(pages, filepath.Join("..", "..", "README.md")) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, doccheck.Markdown(strings.TrimPrefix(p, "../../"), string(b), "labctl")...)
	}
	all = append(all, doccheck.Examples(root, "labctl")...)
	if len(all) < 50 {
		t.Fatalf("found only %d labctl command lines in the docs: the scanner is broken", len(all))
	}
	t.Logf("%d labctl command lines", len(all))
	for _, inv := range all {
		if err := doccheck.Check(root, inv); err != nil {
			t.Errorf("%s: %s\n\t%s", inv.Where, err, inv.Text)
		}
	}
}
