package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// The secrets keys reach node.Config, defaults are filled, and a bad one
// is an error naming the key.
func TestSecretsConfigKeys(t *testing.T) {
	load := func(yaml string) (string, []string, string, error) {
		dir := t.TempDir()
		path := filepath.Join(dir, "labd.yaml")
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(yaml, "STATE", dir)), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := &cobra.Command{}
		cmd.Flags().String("config", path, "")
		cfg, err := loadConfig(viper.New(), cmd, new(strings.Builder))
		return cfg.Secrets.Dir, cfg.Secrets.RestartCommand, cfg.Secrets.IdentityFile, err
	}
	dir, restart, id, err := load(goodConfig)
	if err != nil || dir != "/run/lab-secrets" || !slices.Equal(restart, []string{"systemctl", "try-restart"}) || id != "/etc/ssh/ssh_host_ed25519_key" {
		t.Fatalf("defaults: %q %q %q %v", dir, restart, id, err)
	}
	dir, restart, id, err = load(goodConfig + "secrets: {dir: /run/s, identity_file: /etc/k, restart_command: [systemctl, reload-or-restart]}\n")
	if err != nil || dir != "/run/s" || !slices.Equal(restart, []string{"systemctl", "reload-or-restart"}) || id != "/etc/k" {
		t.Fatalf("set: %q %q %q %v", dir, restart, id, err)
	}
	if code, out := checkConfig(t, goodConfig+"secrets: {dir: run/s}\n"); code != exitConfig || !strings.Contains(out, "secrets.dir") {
		t.Fatalf("relative secrets.dir: exit %d\n%s", code, out)
	}
	if code, out := checkConfig(t, goodConfig+"secrets: {identity_fil: /x}\n"); code != exitConfig || !strings.Contains(out, `did you mean "secrets.identity_file"`) {
		t.Fatalf("typo: exit %d\n%s", code, out)
	}
}
