package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/lab-fleet/lab/node"
	"github.com/lab-fleet/lab/node/hook"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

const hooksConfig = `hooks:
  pre_activate:
    - {command: [/run/current-system/sw/bin/systemctl, is-system-running], timeout: 30s}
    - command: [sh, -c, "pg_dump app > /var/backup/app.sql"]
  post_activate:
    - {command: [/etc/lab/warm-cache, --all], timeout: 2m}
  pre_rollback: []
  post_rollback:
    - {command: [logger, -t, lab, rolled back]}
`

// loadFile decodes a config file as labd does.
func loadFile(t *testing.T, yaml string) (node.Config, error) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "labd.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(yaml, "STATE", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := &cobra.Command{}
	cmd.Flags().String("config", path, "")
	return loadConfig(viper.New(), cmd, io.Discard)
}

func TestHooksConfig(t *testing.T) {
	cfg, err := loadFile(t, goodConfig+hooksConfig)
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.Hooks
	if len(h.PreActivate) != 2 || len(h.PostActivate) != 1 || len(h.PreRollback) != 0 || len(h.PostRollback) != 1 {
		t.Fatalf("hooks %+v", h)
	}
	if !slices.Equal(h.PreActivate[1].Command, []string{"sh", "-c", "pg_dump app > /var/backup/app.sql"}) ||
		h.PreActivate[0].Timeout != 30*time.Second || h.PreActivate[1].Timeout != hook.DefaultTimeout || h.PostActivate[0].Timeout != 2*time.Minute {
		t.Errorf("hooks %+v", h)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"empty command", "hooks: {pre_activate: [{timeout: 1m}]}\n", "hooks.pre_activate[0].command: empty"},
		{"a shell line as argv", "hooks: {post_activate: [{command: [\"systemctl restart web\"]}]}\n", "hooks.post_activate[0].command: \"systemctl restart web\" is one argv element with spaces"},
		{"bad timeout", "hooks: {pre_rollback: [{command: [x], timeout: soon}]}\n", "hooks.pre_rollback[0].timeout"},
		{"negative timeout", "hooks: {post_rollback: [{command: [x]}, {command: [x], timeout: -1s}]}\n", "hooks.post_rollback[1].timeout: negative duration"},
		{"unknown phase", "hooks: {pre_switch: [{command: [x]}]}\n", `unknown key "hooks.pre_switch"`},
		{"typo in a hook", "hooks: {pre_activate: [{comand: [x]}]}\n", `unknown key "hooks.pre_activate[0].comand": did you mean "hooks.pre_activate.command"?`},
	} {
		code, out := checkConfig(t, goodConfig+tc.yaml)
		if code != exitConfig || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d, want %d naming %q:\n%s", tc.name, code, exitConfig, tc.want, out)
		}
	}
}

// TestDocsHooksExample: the hooks docs/labd.md shows are valid.
func TestDocsHooksExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "labd.md"))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, blk := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		if !strings.Contains(blk[1], "\nhooks:") {
			continue
		}
		v := viper.New()
		v.SetConfigType("yaml")
		if err := v.ReadConfig(strings.NewReader(blk[1])); err != nil {
			t.Fatal(err)
		}
		var fc fileConfig
		if err := v.Unmarshal(&fc, func(dc *mapstructure.DecoderConfig) { dc.DecodeHook = stringToDuration }); err != nil {
			t.Fatal(err)
		}
		fc.Hooks.Validate(func(key, problem string) { t.Errorf("docs/labd.md: %s: %s", key, problem) })
		n += len(fc.Hooks.PreActivate) + len(fc.Hooks.PostActivate) + len(fc.Hooks.PreRollback) + len(fc.Hooks.PostRollback)
	}
	if n == 0 {
		t.Fatal("docs/labd.md shows no hooks")
	}
}
