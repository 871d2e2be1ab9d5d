package integration

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lab-fleet/lab/proto"
)

// Exit codes of `labctl publish` (controller.ExitCode).
const (
	exitSucceeded  = 0
	exitFailed     = 3
	exitRolledBack = 4
	exitPending    = 5
)

// fleet is a broker, n nodes on generation 1 and their generation-2 systems.
type fleet struct {
	*Env
	nodes []*Node
	gen1  map[string]string
	gen2  map[string]string
}

// newFleet builds gen 1 and gen 2 of every node (extra nix-build args per
// node for gen 2), installs gen 1, and starts the broker but no labd.
func newFleet(t *testing.T, names []string, gen2Args map[string][]string) *fleet {
	e := NewEnv(t)
	e.StartBroker()
	f := &fleet{Env: e, gen1: map[string]string{}, gen2: map[string]string{}}
	for _, name := range names {
		f.gen1[name] = e.Build(name, 1)
		f.gen2[name] = e.Build(name, 2, gen2Args[name]...)
		f.nodes = append(f.nodes, e.NewNode(name, []string{"web"}, f.gen1[name]))
	}
	e.DumpOnFailure(f.nodes...)
	return f
}

func (f *fleet) startAll() { f.startNodes(f.nodes) }

// startNodes starts labd on every node, then waits until each is online.
func (e *Env) startNodes(nodes []*Node) {
	e.t.Helper()
	for _, n := range nodes {
		n.Start()
	}
	for _, n := range nodes {
		eventually(e.t, 30*time.Second, n.Name+" online", func() bool { return e.Watch().Online(n.Name) })
	}
}

func (f *fleet) awaitOnline(n *Node) {
	f.t.Helper()
	eventually(f.t, 30*time.Second, n.Name+" online", func() bool { return f.Watch().Online(n.Name) })
}

// publish rolls gen 2 out to the named nodes and returns labctl's exit code.
func (f *fleet) publish(id string, extra ...string) (int, string) {
	f.t.Helper()
	args := []string{"publish", "--id", id, "--key", f.KeyFile}
	for _, n := range f.nodes {
		args = append(args, "--toplevel", n.Name+"="+f.gen2[n.Name])
	}
	code, out, _ := f.Labctl(append(args, extra...)...)
	return code, out
}

func switched(n *Node, action, toplevel string) int {
	return strings.Count(strings.Join(n.Switches(), "\n")+"\n", action+"_"+toplevel+"\n")
}

func TestRolloutSwitchesEveryNode(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2", "n3"}, nil)
	f.startAll()
	code, out := f.publish("r-all", "--timeout", "90s")
	if code != exitSucceeded {
		t.Fatalf("publish exit %d, want %d", code, exitSucceeded)
	}
	for _, n := range f.nodes {
		s := f.Watch().AwaitState(t, n.Name, "r-all", proto.StateSucceeded, 10*time.Second)
		if n.Current() != f.gen2[n.Name] {
			t.Errorf("%s: profile at %s, want %s", n.Name, n.Current(), f.gen2[n.Name])
		}
		if s.Current != f.gen2[n.Name] || s.Previous != f.gen1[n.Name] || s.AppliedGen != s.Execution.Gen {
			t.Errorf("%s: status current=%s previous=%s applied=%d exec=%+v", n.Name, s.Current, s.Previous, s.AppliedGen, s.Execution)
		}
		if c := switched(n, "switch", f.gen2[n.Name]); c != 1 {
			t.Errorf("%s: switched to gen 2 %d times, want 1: %v", n.Name, c, n.Switches())
		}
		if !s.Checks["system-healthy"].OK {
			t.Errorf("%s: check not reported ok: %+v", n.Name, s.Checks)
		}
		if !strings.Contains(out, n.Name) {
			t.Errorf("summary does not name %s:\n%s", n.Name, out)
		}
		// labd's metrics for node_exporter say the same.
		eventually(t, 3*time.Second, n.Name+"'s labd.prom on the new generation", func() bool {
			return promValue(t, n.Textfile(), "lab_node_applied_generation") == float64(s.AppliedGen) &&
				promValue(t, n.Textfile(), "lab_node_info", "current_system", f.gen2[n.Name]) == 1 &&
				promValue(t, n.Textfile(), "lab_node_executions_total", "result", "succeeded") == 1
		})
	}
}

// promValue is the value of the sample of name with the given labels
// (name=value pairs) in a textfile-collector file, -1 when there is none.
func promValue(t *testing.T, path, name string, labels ...string) float64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s does not parse: %v\n%s", path, err, b)
	}
next:
	for _, m := range mfs[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		return m.GetGauge().GetValue() + m.GetCounter().GetValue()
	}
	return -1
}

func TestFailingHealthCheckRollsBack(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2", "n3"}, map[string][]string{"n2": {"--arg", "failHealth", "true"}})
	f.startAll()
	code, out := f.publish("r-bad", "--timeout", "90s")
	if code != exitRolledBack {
		t.Fatalf("publish exit %d, want %d (rolled back)", code, exitRolledBack)
	}
	bad := f.nodes[1]
	s := f.Watch().AwaitState(t, "n2", "r-bad", proto.StateRolledBack, 10*time.Second)
	if bad.Current() != f.gen1["n2"] {
		t.Errorf("n2 profile at %s, want the recorded previous %s", bad.Current(), f.gen1["n2"])
	}
	if switched(bad, "switch", f.gen2["n2"]) != 1 || switched(bad, "switch", f.gen1["n2"]) != 1 {
		t.Errorf("n2 switch log: want gen 2 then back to gen 1, got %v", bad.Switches())
	}
	if s.Checks["system-healthy"].OK || s.Execution.Error == "" {
		t.Errorf("n2 status does not say why: checks=%+v error=%q", s.Checks, s.Execution.Error)
	}
	if !strings.Contains(out, "rolled-back") {
		t.Errorf("summary does not show the rollback:\n%s", out)
	}
	for _, n := range []*Node{f.nodes[0], f.nodes[2]} {
		f.Watch().AwaitState(t, n.Name, "r-bad", proto.StateSucceeded, 10*time.Second)
		if n.Current() != f.gen2[n.Name] {
			t.Errorf("%s not on gen 2", n.Name)
		}
	}
	var states []proto.ExecState
	for _, ev := range f.Watch().Events("n2") {
		if ev.Rollout == "r-bad" {
			states = append(states, ev.State)
		}
	}
	for _, want := range []proto.ExecState{proto.StateFetching, proto.StateActivating, proto.StateVerifying, proto.StateRollingBack, proto.StateRolledBack} {
		if !slices.Contains(states, want) {
			t.Errorf("n2 events %v lack %s", states, want)
		}
	}
}

func TestOfflineNodeConvergesWhenItStarts(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2", "n3"}, nil)
	sleeper := f.nodes[2]
	for _, n := range f.nodes[:2] {
		n.Start()
		f.awaitOnline(n)
	}
	code, out := f.publish("r-sleep", "--timeout", "15s", "--allow-unseen") // n3 never connected yet
	if code != exitPending {
		t.Fatalf("publish exit %d, want %d (pending)", code, exitPending)
	}
	if !strings.Contains(out, "n3") {
		t.Errorf("summary does not name the pending node:\n%s", out)
	}
	if sleeper.Current() != f.gen1["n3"] {
		t.Fatalf("n3 changed while asleep")
	}
	// The laptop wakes up: retained desired state brings it to gen 2.
	sleeper.Start()
	f.Watch().AwaitState(t, "n3", "r-sleep", proto.StateSucceeded, 60*time.Second)
	if sleeper.Current() != f.gen2["n3"] {
		t.Errorf("n3 profile at %s, want %s", sleeper.Current(), f.gen2["n3"])
	}
}

func TestRestartDuringActivation(t *testing.T) {
	f := newFleet(t, []string{"n1"}, map[string][]string{"n1": {"--arg", "sleepSwitch", "4"}})
	n := f.nodes[0]
	f.startAll()
	if code, _ := f.publish("r-crash", "--no-wait"); code != 0 {
		t.Fatalf("publish --no-wait exit %d", code)
	}
	f.Watch().AwaitState(t, "n1", "r-crash", proto.StateActivating, 60*time.Second)
	n.Kill() // SIGKILL in the middle of switch-to-configuration
	n.Start()
	s := f.Watch().AwaitState(t, "n1", "r-crash", proto.StateSucceeded, 90*time.Second)
	if n.Current() != f.gen2["n1"] || s.Current != f.gen2["n1"] {
		t.Errorf("after restart: profile %s, status %s, want %s", n.Current(), s.Current, f.gen2["n1"])
	}
	// The detached switch finished while labd was down; labd must not run it twice.
	if c := switched(n, "switch", f.gen2["n1"]); c != 1 {
		t.Errorf("gen 2 activated %d times, want exactly 1: %v", c, n.Switches())
	}
}

// Any MQTT client sees fleet state: the retained status, read with
// mosquitto_sub, decodes to what the nodes did.
func TestStatusReadableWithMosquittoSub(t *testing.T) {
	requireTools(t, "mosquitto_sub")
	f := newFleet(t, []string{"n1", "n2"}, nil)
	f.startAll()
	if code, _ := f.publish("r-sub", "--timeout", "90s"); code != exitSucceeded {
		t.Fatalf("publish exit %d", code)
	}
	args := []string{"-V", "mqttv5", "-h", "127.0.0.1", "-p", fmt.Sprint(f.Port),
		"-t", "lab/v1/node/+/status", "-C", "2", "-W", "10", "-F", "%t %x"}
	if f.creds != nil {
		args = append(args, "-u", mosqViewer, "-P", f.creds.password(t, mosqViewer))
	}
	out, err := exec.Command("mosquitto_sub", args...).Output()
	if err != nil {
		t.Fatalf("mosquitto_sub: %v %s", err, stderrOf(err))
	}
	seen := map[string]proto.NodeStatus{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		topic, hx, _ := strings.Cut(line, " ")
		b, err := hex.DecodeString(hx)
		if err != nil {
			t.Fatalf("%s: %v", topic, err)
		}
		var s proto.NodeStatus
		if err := proto.Decode(b, &s); err != nil {
			t.Fatalf("%s: %v", topic, err)
		}
		seen[s.Node] = s
	}
	for _, n := range f.nodes {
		s, ok := seen[n.Name]
		if !ok || s.Execution.Rollout != "r-sub" || s.Execution.State != proto.StateSucceeded || s.Current != f.gen2[n.Name] {
			t.Errorf("%s via mosquitto_sub: %+v", n.Name, s)
		}
	}
}
