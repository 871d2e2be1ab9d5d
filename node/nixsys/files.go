package nixsys

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Files of an activation in its runDir.
const (
	recordFile = "activation.json"   // record, written by labd before the helper starts
	pidFile    = "activation.pid"    // "<id> <pid>", written by the helper
	logFile    = "activation.log"    // helper and switch output
	resultFile = "activation.result" // resultRecord, written by the helper
)

// record is activation.json: what was started.
type record struct {
	ID       string    `json:"id"`
	Toplevel string    `json:"toplevel"`
	Action   string    `json:"action"`
	Detach   string    `json:"detach"`
	Pid      int       `json:"pid,omitempty"`
	Unit     string    `json:"unit,omitempty"`
	Started  time.Time `json:"started"`
}

// resultRecord is activation.result: how it ended.
type resultRecord struct {
	ID       string    `json:"id"`
	ExitCode int       `json:"exit_code"`
	Error    string    `json:"error,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Toplevel string    `json:"toplevel"`
	Action   string    `json:"action"`
}

// readResult reads the result of activation id; false while there is none
// (or only the result of another activation).
func readResult(runDir, id string) (Result, bool, error) {
	var rr resultRecord
	ok, err := readJSON(filepath.Join(runDir, resultFile), &rr)
	if err != nil || !ok || rr.ID != id {
		return Result{}, false, err
	}
	return Result{
		ExitCode:   rr.ExitCode,
		OutputTail: readTail(filepath.Join(runDir, logFile)),
		Started:    rr.Started,
		Finished:   rr.Finished,
		Toplevel:   rr.Toplevel,
		Action:     rr.Action,
	}, true, nil
}

// readHelperPid returns the pid the helper of activation id recorded, 0 if none.
func readHelperPid(runDir, id string) int {
	b, err := os.ReadFile(filepath.Join(runDir, pidFile))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 || f[0] != id {
		return 0
	}
	pid, _ := strconv.Atoi(f[1])
	return pid
}

// readTail returns the last tailLen bytes of a file, "" if unreadable.
func readTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > tailLen {
		if _, err := f.Seek(-tailLen, io.SeekEnd); err != nil {
			return ""
		}
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// readJSON decodes path into v; false if the file does not exist.
func readJSON(path string, v any) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return true, nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return writeFileAtomic(path, append(b, '\n'))
}

// writeFileAtomic writes a temporary file, syncs it and renames it over
// path, so that readers see the old or the new content, never a part.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
