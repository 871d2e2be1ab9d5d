package main

import (
	"strings"
	"testing"
)

// publish checks --configurations before anything connects: it goes with
// --flake, and an attribute path that is not one is refused, naming the flag.
func TestPublishConfigurationsFlag(t *testing.T) {
	clearBrokerEnv(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--toplevel", "n1=/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-n1", "--configurations", "clan.nixosConfigurations"}, "--configurations goes with --flake"},
		{[]string{"--flake", ".", "--configurations", "nixosConfigurations --impure"}, "--configurations"},
		{[]string{"--flake", ".", "--configurations", `a."${x}"`}, "not allowed in a quoted name"},
	} {
		code, _, errOut := labctl(t, append([]string{"publish", "--broker", "mqtt://127.0.0.1:1"}, c.args...)...)
		if code != exitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("%q: exit %d, want %d and %q\n%s", c.args, code, exitUsage, c.want, errOut)
		}
	}
}
