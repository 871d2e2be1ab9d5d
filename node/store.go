package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// stateFile is the node's persisted state inside StateDir.
const stateFile = "state.json"

// ErrCorruptState means state.json exists but cannot be read; labd refuses
// to start rather than forget what it applied.
var ErrCorruptState = errors.New("corrupt node state")

// loadState reads the persisted state; a missing file is a fresh node.
func loadState(dir string) (state, error) {
	var s state
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		s.Exec.State = "idle"
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read node state: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%w: %s: %v (move it away to start afresh; the node will then re-apply its desired state)", ErrCorruptState, filepath.Join(dir, stateFile), err)
	}
	return s, nil
}

// saveState writes the state atomically: a temporary file, fsync, rename,
// fsync of the directory. A crash leaves the old or the new file, never a
// torn one.
func saveState(dir string, s state) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode node state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, stateFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("save node state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("save node state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save node state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save node state: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("save node state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
