package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
)

func TestDemoUsage(t *testing.T) {
	for _, args := range [][]string{{"demo", "--nodes", "1"}, {"demo", "--nodes", "51"}, {"demo", "extra"}} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != exitUsage {
			t.Errorf("labctl %v → exit %d, want %d\n%s", args, code, exitUsage, errOut.String())
		}
	}
}

// Without Nix the demo says what it needs and exits 1.
func TestDemoWithoutNix(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"demo"}, &out, &errOut)
	if code != exitError {
		t.Fatalf("exit %d, want %d", code, exitError)
	}
	if !strings.Contains(errOut.String(), "apt-get install -y nix-bin") {
		t.Errorf("no install hint:\n%s", errOut.String())
	}
	if _, err := exec.LookPath("nix-build"); err == nil {
		t.Fatal("PATH still finds nix-build")
	}
}

func TestCobraErrorsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"no-such-command"}, {"status", "--no-such-flag"}, {"publish", "--timeout", "soon"}, {"key", "public"}} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != exitUsage {
			t.Errorf("labctl %v → exit %d, want %d\n%s", args, code, exitUsage, errOut.String())
		}
	}
}
