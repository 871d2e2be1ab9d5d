package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lab-fleet/lab/node"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// ssh_host_keys reaches node.Config, with its default, and a relative
// glob is an error naming the key.
func TestSSHHostKeysConfigKey(t *testing.T) {
	load := func(yaml string) (string, error) {
		dir := t.TempDir()
		path := filepath.Join(dir, "labd.yaml")
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(yaml, "STATE", dir)), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := &cobra.Command{}
		cmd.Flags().String("config", path, "")
		cfg, err := loadConfig(viper.New(), cmd, new(strings.Builder))
		return cfg.SSHHostKeys, err
	}
	if g, err := load(goodConfig); err != nil || g != node.DefaultSSHHostKeys {
		t.Fatalf("default: %q %v", g, err)
	}
	if g, err := load(goodConfig + "ssh_host_keys: /persist/ssh/*.pub\n"); err != nil || g != "/persist/ssh/*.pub" {
		t.Fatalf("set: %q %v", g, err)
	}
	if code, out := checkConfig(t, goodConfig+"ssh_host_keys: ssh/*.pub\n"); code != exitConfig || !strings.Contains(out, "ssh_host_keys") {
		t.Fatalf("relative glob: exit %d\n%s", code, out)
	}
}
