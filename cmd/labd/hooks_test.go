package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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
