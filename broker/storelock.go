package broker

import (
	"fmt"
	"os"
	"strings"
)

// DataDirInUseError is New's error when another process holds the lock of
// Config.DataDir's store: another broker on the same directory, usually.
// It wraps ErrDataDirInUse.
type DataDirInUseError struct {
	Dir  string
	PID  int    // the process holding the lock, 0 when unknown
	Name string // its command name (/proc/PID/comm), "" when unknown
}

func (e *DataDirInUseError) Error() string {
	switch {
	case e.PID == 0:
		return fmt.Sprintf("data directory %s is in use by another process", e.Dir)
	case e.Name == "":
		return fmt.Sprintf("data directory %s is in use by another process (PID %d)", e.Dir, e.PID)
	}
	return fmt.Sprintf("data directory %s is in use by another %s (PID %d)", e.Dir, e.Name, e.PID)
}

func (e *DataDirInUseError) Unwrap() error { return ErrDataDirInUse }

// dataDirInUse describes the holder of the lock on the store at path.
func dataDirInUse(dir, path string) *DataDirInUseError {
	e := &DataDirInUseError{Dir: dir, PID: lockHolder(path)}
	if e.PID != 0 {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", e.PID)); err == nil {
			e.Name = strings.TrimSpace(string(b))
		}
	}
	return e
}
