package nodemetrics

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lab-fleet/lab/proto"
)

// readTextfile parses a textfile as node_exporter would.
func readTextfile(t *testing.T, path string) map[string]*dto.MetricFamily {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("%s does not parse: %v", path, err)
	}
	return mfs
}

// value is the value of the sample of mf whose labels include want
// (name=value pairs); ok false if there is none.
func value(mfs map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if have[want[i]] != want[i+1] {
				continue next
			}
		}
		return m.GetGauge().GetValue() + m.GetCounter().GetValue(), true
	}
	return 0, false
}

var sys = "/nix/store/" + strings.Repeat("a", 32) + "-nixos-system-n1"

func TestTransitionsCountExecutionsAndRollbacks(t *testing.T) {
	s := New()
	for _, tr := range [][2]proto.ExecState{
		{proto.StateIdle, proto.StateFetching}, {proto.StateFetching, proto.StateActivating},
		{proto.StateActivating, proto.StateVerifying}, {proto.StateVerifying, proto.StateRollingBack},
		{proto.StateRollingBack, proto.StateRollingBack}, // not a change
		{proto.StateRollingBack, proto.StateRolledBack}, {proto.StateQueued, proto.StateAlreadyCurrent},
		{proto.StateVerifying, proto.StateSucceeded}, {proto.StateVerifying, proto.StateSucceeded},
	} {
		s.Transition(tr[0], tr[1])
	}
	s.Rejected()
	path := filepath.Join(t.TempDir(), FileName)
	if err := WriteTextfile(path, s.Gatherer(Facts{})); err != nil {
		t.Fatal(err)
	}
	mfs := readTextfile(t, path)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"lab_node_executions_total", []string{"result", "succeeded"}, 2},
		{"lab_node_executions_total", []string{"result", "rolled-back"}, 1},
		{"lab_node_executions_total", []string{"result", "already-current"}, 1},
		{"lab_node_executions_total", []string{"result", "timed-out"}, 0}, // there before it happens
		{"lab_node_rollbacks_total", nil, 1},
		{"lab_node_rejected_messages_total", nil, 1},
		{"lab_node_broker_connected", nil, 0},
	} {
		if got, ok := value(mfs, c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := mfs["lab_node_info"]; ok {
		t.Error("lab_node_info without a status")
	}
}

// The file holds the status' facts, is 0644, and nothing else is left in
// the directory.
func TestTextfileHoldsTheStatus(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	st := &proto.NodeStatus{Node: "n1", LabdVersion: "1.2.3", NixOSVersion: "26.05", AppliedGen: 7, Current: sys, Booted: sys + "-old", NeedsReboot: true,
		Execution: proto.Execution{Gen: 8, State: proto.StateVerifying, Since: 1_700_000_000_500},
		Checks: proto.CheckResults{"web": {OK: true, At: 1_700_000_001_000}, "db": {OK: false, At: 1_700_000_002_000},
			"later": {Detail: "not run since labd started"}},
		Generations: []proto.Generation{{Number: 11, Toplevel: sys + "-old", Created: 1_600_000_000_000}, {Number: 12, Toplevel: sys, Current: true, Created: 1_700_000_000_000}},
		Problems:    []string{"cannot persist"}}
	if err := WriteTextfile(path, New().Gatherer(Facts{Status: st, Connected: true})); err != nil {
		t.Fatal(err)
	}
	mfs := readTextfile(t, path)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"lab_node_info", []string{"machine", "n1", "version", "1.2.3", "current_system", sys, "booted_system", sys + "-old", "nixos_version", "26.05"}, 1},
		{"lab_node_execution_state", []string{"state", "verifying"}, 1},
		{"lab_node_execution_state_since_timestamp_seconds", nil, 1_700_000_000.5},
		{"lab_node_execution_generation", nil, 8},
		{"lab_node_applied_generation", nil, 7},
		{"lab_node_needs_reboot", nil, 1},
		{"lab_node_broker_connected", nil, 1},
		{"lab_node_health_check_ok", []string{"check", "web"}, 1},
		{"lab_node_health_check_ok", []string{"check", "db"}, 0},
		{"lab_node_health_check_timestamp_seconds", []string{"check", "db"}, 1_700_000_002},
		{"lab_node_profile_generation", nil, 12},
		{"lab_node_profile_generation_timestamp_seconds", nil, 1_700_000_000},
		{"lab_node_problems", nil, 1},
	} {
		if got, ok := value(mfs, c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if n := len(mfs["lab_node_execution_state"].GetMetric()); n != 1 {
		t.Errorf("lab_node_execution_state has %d samples, want 1 (the state it is in)", n)
	}
	if _, ok := value(mfs, "lab_node_health_check_ok", "check", "later"); ok {
		t.Error("a check that has not run has a lab_node_health_check_ok")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644 (node_exporter runs as another user)", fi.Mode().Perm())
	}
	assertOnly(t, dir, FileName)
}

type failing struct{}

func (failing) Gather() ([]*dto.MetricFamily, error) { return nil, errors.New("boom") }

// A failed write leaves the old file whole and no temporary file; a
// second write replaces the first.
func TestTextfileReplacedAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	s := New()
	facts := func(gen uint64) Facts {
		return Facts{Status: &proto.NodeStatus{Node: "n1", AppliedGen: gen, Execution: proto.Execution{Gen: gen, State: proto.StateSucceeded}}}
	}
	if err := WriteTextfile(path, s.Gatherer(facts(1))); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if err := WriteTextfile(path, failing{}); err == nil {
		t.Fatal("a failing gather was written")
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatalf("a failed write changed the file:\n%s", after)
	}
	// A directory that cannot take the temporary file: the error names the path.
	// A directory that cannot take the temporary file: the error names
	// the path and its cause, the same each time (labd logs it once).
	missing := filepath.Join(dir, "missing", FileName)
	err1, err2 := WriteTextfile(missing, s.Gatherer(facts(1))), WriteTextfile(missing, s.Gatherer(facts(1)))
	if err1 == nil || !strings.Contains(err1.Error(), missing) || !errors.Is(err1, fs.ErrNotExist) {
		t.Errorf("write into a missing directory: %v", err1)
	} else if err1.Error() != err2.Error() {
		t.Errorf("the same failure twice: %q, then %q", err1, err2)
	}
	if err := WriteTextfile(path, s.Gatherer(facts(2))); err != nil {
		t.Fatal(err)
	}
	if got, _ := value(readTextfile(t, path), "lab_node_applied_generation"); got != 2 {
		t.Errorf("after the second write lab_node_applied_generation = %v, want 2", got)
	}
	assertOnly(t, dir, FileName)
}

// assertOnly fails unless dir holds exactly names.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %v, want only %v (a temporary file left behind?)", dir, got, names)
	}
}

var _ prometheus.Gatherer = failing{}
