package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/go-viper/mapstructure/v2"
	"github.com/lab-fleet/lab/internal/configkeys"
	"github.com/lab-fleet/lab/internal/doccheck"
	"github.com/spf13/viper"
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

// TestDocsConfigKeys: every config file docs/labd.md shows spells its keys
// as labd knows them.
func TestDocsConfigKeys(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "labd.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```(yaml|toml)\n(.*?)```").FindAllStringSubmatch(string(b), -1)
	if len(blocks) < 1 {
		t.Fatalf("docs/labd.md: %d config examples, want at least 1", len(blocks))
	}
	for i, blk := range blocks {
		v := viper.New()
		v.SetConfigType(blk[1])
		if err := v.ReadConfig(strings.NewReader(blk[2])); err != nil {
			t.Fatalf("example %d: %v\n%s", i, err, blk[2])
		}
		var fc fileConfig
		var md mapstructure.Metadata
		_ = v.Unmarshal(&fc, func(dc *mapstructure.DecoderConfig) { dc.Metadata = &md })
		if err := configkeys.Unknown("docs/labd.md", md.Unused, knownKeys); err != nil {
			t.Errorf("example %d: %v", i, err)
		}
	}
}
