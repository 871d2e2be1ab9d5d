package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lab-fleet/lab/proto"
)

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := loadState(dir)
	if err != nil || s.Exec.State != proto.StateIdle {
		t.Fatalf("fresh node: %+v, %v", s.Exec, err)
	}
	d := desired(7, 1, proto.ActionBoot)
	want := at(proto.StateRebooting, d)
	want.Gates = map[string]gate{"web": {Rollout: "r-1", OpenWave: 1, State: proto.GateRunning}}
	want.BootBefore, want.Commands, want.AppliedGen = "boot-1", []string{"c1"}, 6
	if err := saveState(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Exec != want.Exec || got.Desired.Gen != 7 || got.Gates["web"] != want.Gates["web"] || got.BootBefore != "boot-1" || got.AppliedGen != 6 || got.Previous != tlOld {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

// A corrupt state file stops labd with a clear error, and the file is left
// as it is for the operator to look at.
func TestCorruptStateRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, stateFile)
	if err := os.WriteFile(path, []byte(`{"exec": {"state": "activ`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadState(dir)
	if !errors.Is(err, ErrCorruptState) || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != `{"exec": {"state": "activ` {
		t.Error("the corrupt file was changed")
	}
}

func TestSaveIntoAMissingDirectoryFails(t *testing.T) {
	if err := saveState(filepath.Join(t.TempDir(), "gone"), state{}); err == nil {
		t.Fatal("saved into a missing directory")
	}
}
