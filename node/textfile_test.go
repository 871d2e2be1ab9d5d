package node

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lab-fleet/lab/internal/clock"
	"github.com/lab-fleet/lab/node/health"
	"github.com/lab-fleet/lab/node/nixsys/nixsystest"
	"github.com/lab-fleet/lab/node/nodemetrics"
	"github.com/lab-fleet/lab/proto"
)

// promFile is a parsed labd.prom; nil when the file is absent.
type promFile map[string]*dto.MetricFamily

func readProm(t *testing.T, path string) promFile {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
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

// get is the value of name's sample whose labels include the name=value
// pairs of labels, or an error saying what is there instead.
func (p promFile) get(name string, labels ...string) (float64, error) {
	var seen []string
next:
	for _, m := range p[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		seen = append(seen, fmt.Sprint(have))
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		return m.GetGauge().GetValue() + m.GetCounter().GetValue(), nil
	}
	return 0, fmt.Errorf("no %s%v (samples: %v)", name, labels, seen)
}

// want fails with the first sample of p that is absent or not the value.
func (p promFile) want(samples ...sample) error {
	if p == nil {
		return fmt.Errorf("no file")
	}
	for _, s := range samples {
		got, err := p.get(s.name, s.labels...)
		if err != nil {
			return err
		}
		if got != s.value {
			return fmt.Errorf("%s%v = %v, want %v", s.name, s.labels, got, s.value)
		}
	}
	return nil
}

type sample struct {
	name   string
	labels []string
	value  float64
}

// awaitProm waits until the file at path holds samples.
func awaitProm(t *testing.T, path string, within time.Duration, samples ...sample) promFile {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		p := readProm(t, path)
		err := p.want(samples...)
		if err == nil {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after %s: %v", path, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// labd with metrics.textfile_dir writes labd.prom when it starts, after
// every change of its execution (a rollout that succeeds, with its check)
// and of its connection, at least every interval, and once more when it
// stops; the directory holds nothing else. What the file says is what the
// status says.
func TestTextfileFollowsTheNode(t *testing.T) {
	key, err := proto.GenerateKey("test")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, nodemetrics.FileName)
	clk := clock.NewFake(time.Now())
	fake := nixsystest.New()
	br, statuses, stop := testNodeWith(t, fake, key, nil, func(c *Config) {
		c.Clock, c.MetricsTextfileDir, c.Version = clk, dir, "1.2.3"
		c.Checks = []health.Check{{Name: "broker", Type: "tcp", Address: strings.TrimPrefix(c.Broker[0], "mqtt://")}}
	})

	awaitProm(t, path, 5*time.Second,
		sample{"lab_node_info", []string{"machine", "n1", "version", "1.2.3", "current_system", tlOld}, 1},
		sample{"lab_node_broker_connected", nil, 1},
		sample{"lab_node_execution_state", []string{"state", "idle"}, 1},
		sample{"lab_node_applied_generation", nil, 0},
		sample{"lab_node_executions_total", []string{"result", "succeeded"}, 0})
	if p := readProm(t, path); p.want(sample{"lab_node_health_check_ok", []string{"check", "broker"}, 1}) == nil {
		t.Error("a check that has not run yet has lab_node_health_check_ok")
	}

	publishDesired(t, br, key, "r-1", tlNew)
	s := awaitExec(t, statuses, "r-1", 10*time.Second)
	if s.Execution.State != proto.StateSucceeded {
		t.Fatalf("execution %s %q, want succeeded", s.Execution.State, s.Execution.Error)
	}
	// A message that is not one: rejected, counted.
	if err := br.Server.Publish(proto.DefaultTopics.NodeDesired("n1"), []byte("not msgpack"), false, 1); err != nil {
		t.Fatal(err)
	}
	awaitProm(t, path, 5*time.Second,
		sample{"lab_node_info", []string{"current_system", tlNew}, 1},
		sample{"lab_node_execution_state", []string{"state", "succeeded"}, 1},
		sample{"lab_node_execution_generation", nil, float64(s.Execution.Gen)},
		sample{"lab_node_applied_generation", nil, float64(s.AppliedGen)},
		sample{"lab_node_execution_state_since_timestamp_seconds", nil, float64(s.Execution.Since) / 1000},
		sample{"lab_node_health_check_ok", []string{"check", "broker"}, 1},
		sample{"lab_node_profile_generation", nil, 2},
		sample{"lab_node_executions_total", []string{"result", "succeeded"}, 1},
		sample{"lab_node_rollbacks_total", nil, 0},
		sample{"lab_node_rejected_messages_total", nil, 1},
		sample{"lab_node_needs_reboot", nil, 0})
	if s.AppliedGen == 0 {
		t.Fatal("applied gen 0 after a success")
	}
	assertDirHolds(t, dir, nodemetrics.FileName)

	// Nothing changes: the file is written again once the interval passed.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if readProm(t, path) != nil {
		t.Fatal("labd.prom written again with nothing changed and the interval not passed")
	}
	clk.Advance(30 * time.Second)
	awaitProm(t, path, 5*time.Second, sample{"lab_node_applied_generation", nil, float64(s.AppliedGen)})

	// The connection lost: it says so at once; labd reconnects (after a
	// second's backoff) and says that too.
	br.Kick(t, "n1")
	awaitProm(t, path, time.Second, sample{"lab_node_broker_connected", nil, 0})
	awaitProm(t, path, 5*time.Second, sample{"lab_node_broker_connected", nil, 1})

	stop()
	awaitProm(t, path, 0, sample{"lab_node_broker_connected", nil, 0},
		sample{"lab_node_applied_generation", nil, float64(s.AppliedGen)})
	assertDirHolds(t, dir, nodemetrics.FileName)
}

// assertDirHolds fails unless dir holds exactly names.
func assertDirHolds(t *testing.T, dir string, names ...string) {
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

// A write that fails is logged once per distinct error, and the recovery
// once; labd goes on.
func TestTextfileFailuresLoggedOnce(t *testing.T) {
	dir := t.TempDir()
	textDir := filepath.Join(dir, "node-exporter") // not there yet
	var logs syncBuffer
	d, err := New(Config{Name: "n1", Broker: []string{"mqtt://127.0.0.1:1"}, StateDir: filepath.Join(dir, "state"),
		BootIDFile: filepath.Join(dir, "boot_id"), MetricsTextfileDir: textDir,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, nixsystest.New())
	if err != nil {
		t.Fatal(err)
	}
	tf := d.newTextfile()
	for range 3 {
		tf.write(d)
	}
	if n := strings.Count(logs.String(), "cannot write the metrics textfile"); n != 1 {
		t.Errorf("3 failed writes logged %d times, want once:\n%s", n, logs.String())
	}
	if err := os.Mkdir(textDir, 0o755); err != nil {
		t.Fatal(err)
	}
	tf.write(d)
	tf.write(d)
	if n := strings.Count(logs.String(), "metrics textfile written again"); n != 1 {
		t.Errorf("the recovery logged %d times, want once:\n%s", n, logs.String())
	}
	if err := readProm(t, filepath.Join(textDir, nodemetrics.FileName)).want(sample{"lab_node_broker_connected", nil, 0},
		sample{"lab_node_info", []string{"machine", "n1"}, 1}); err != nil {
		t.Error(err)
	}
	if err := os.RemoveAll(textDir); err != nil {
		t.Fatal(err)
	}
	tf.write(d)
	if n := strings.Count(logs.String(), "cannot write the metrics textfile"); n != 2 {
		t.Errorf("a failure after the recovery logged: %d failures in all, want 2:\n%s", n, logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
