package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/controller/flake"
)

func TestParseOn(t *testing.T) {
	for _, c := range []struct {
		on, want, err string
	}{
		{on: "@web,db1", want: "@web db1"},
		{on: " n1 , @arm ,, n2 ", want: "n1 @arm n2"},
		{on: "", err: "selects nothing"},
		{on: " , ", err: "selects nothing"},
		{on: "@", err: "--on @: "},
		{on: "Kitchen", err: "--on Kitchen: "},
		{on: "n1;reboot", err: "not in [a-z0-9-]"},
	} {
		terms, err := parseOn(c.on)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want one containing %q", c.on, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.on, err)
			continue
		}
		var got []string
		for _, tm := range terms {
			got = append(got, tm.String())
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("%q parsed as %v, want %s", c.on, got, c.want)
		}
	}
}

func TestResolve(t *testing.T) {
	groups := map[string][]string{"web": {"w1", "w2"}, "arm": {"w2", "pi"}}
	members := func(g string) []string { return groups[g] }
	terms, err := parseOn("db,@web,@arm,w1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := resolve(terms, members, "none")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"db", "w1", "w2", "pi"}; !slices.Equal(got, want) {
		t.Errorf("resolved %v, want %v (each once, in order)", got, want)
	}
	terms, _ = parseOn("db,@gone")
	if _, err := resolve(terms, members, "no node is in it"); err == nil || err.Error() != "--on @gone: no node is in it" {
		t.Errorf("empty group: %v", err)
	}
}

func TestSelectFlake(t *testing.T) {
	ms := []flake.Machine{{Name: "nas", Groups: []string{"servers"}}, {Name: "kitchen", Groups: []string{"family"}}, {Name: "router", Groups: []string{"servers"}}}
	names := func(ms []flake.Machine) (out []string) {
		for _, m := range ms {
			out = append(out, m.Name)
		}
		return out
	}
	for on, want := range map[string][]string{"": {"nas", "kitchen", "router"}, "@servers": {"nas", "router"}, "kitchen,@servers": {"kitchen", "nas", "router"}} {
		got, err := selectFlake(on, ms)
		if err != nil || !slices.Equal(names(got), want) {
			t.Errorf("%q: %v, %v; want %v", on, names(got), err, want)
		}
	}
	for on, want := range map[string]string{"@nobody": "--on @nobody: no machine of the flake is in this group", "attic": "--on attic: no machine of the flake has this name"} {
		if _, err := selectFlake(on, ms); err == nil || err.Error() != want {
			t.Errorf("%q: error %v, want %q", on, err, want)
		}
	}
}

// TestBadOnFailsBeforeConnecting: a malformed --on is a usage error (exit
// 2) at once, not after waiting for a broker (none listens here).
func TestBadOnFailsBeforeConnecting(t *testing.T) {
	for _, args := range [][]string{
		{"reboot", "--on", "Kitchen", "--broker", "mqtt://127.0.0.1:1"},
		{"publish", "--on", "@", "--toplevel", "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x", "--broker", "mqtt://127.0.0.1:1"},
	} {
		var out, errOut strings.Builder
		start := time.Now()
		code := run(context.Background(), args, &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), "--on") || time.Since(start) > 5*time.Second {
			t.Errorf("%v: exit %d after %s, stderr %q; want exit 2 at once, naming --on", args, code, time.Since(start), errOut.String())
		}
	}
}
