package proto

import (
	"os/exec"
	"strings"
	"testing"
)

// proto is the contract everybody depends on; it must depend on nothing of ours.
func TestImportsNothingOfOurs(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/lab-fleet/lab/") && p != "github.com/lab-fleet/lab/proto" {
			t.Errorf("proto imports %s", p)
		}
	}
}
