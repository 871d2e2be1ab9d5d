package metrics

import (
	"io"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/lab-fleet/lab/broker"
	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/alert"
	"github.com/lab-fleet/lab/node/nodemetrics"
	"github.com/lab-fleet/lab/proto"
)

// sampleFleet is a Fleet that has seen two machines (one online with a
// check run, one offline and needing a reboot) and a halted rollout, so
// that every metric of the collector has at least one sample.
func sampleFleet(t *testing.T) *controller.Fleet {
	t.Helper()
	topics := proto.DefaultTopics
	f := controller.NewFleet(topics, slog.New(slog.NewTextHandler(io.Discard, nil)))
	now := time.Now()
	handle := func(topic string, m proto.Message) {
		t.Helper()
		b, err := proto.Seal(m)
		if err != nil {
			t.Fatal(err)
		}
		f.Handle(topic, b)
	}
	sys := func(c byte) string { return "/nix/store/" + strings.Repeat(string(c), 32) + "-nixos-system" }
	for i, name := range []string{"n1", "n2"} {
		st := &proto.NodeStatus{Node: name, AppliedGen: uint64(3 + i), Current: sys('a'), Booted: sys('a'), UpdatedAt: now.UnixMilli(),
			Execution: proto.Execution{Rollout: "r1", Gen: uint64(3 + i), State: proto.StateSucceeded, Since: now.UnixMilli()},
			Checks:    proto.CheckResults{"web": {OK: i == 0, At: now.UnixMilli(), Detail: "200"}}}
		if i == 1 {
			st.Booted, st.NeedsReboot, st.Execution.State = sys('b'), true, proto.StateRolledBack
		}
		st.Stamp(name, now)
		handle(topics.NodeStatus(name), st)
		p := &proto.Presence{Node: name, Online: i == 0, Since: now.UnixMilli()}
		p.Stamp(name, now)
		handle(topics.NodePresence(name), p)
	}
	rs := &proto.RolloutState{Rollout: "r1", CreatedAt: now.Add(-time.Minute).UnixMilli(), State: proto.RolloutRunning, Halted: true,
		Waves: [][]string{{"n1", "n2"}}, Counters: proto.Counters{Succeeded: 1, RolledBack: 1}}
	rs.Stamp("controller", now)
	handle(topics.Rollout("r1"), rs)
	f.Handle(topics.NodeStatus("n3"), []byte("not msgpack")) // lab_controller_invalid_messages_total: 1
	return f
}

// sampleBroker is a lab broker, not started: its collector reads the
// guard's and mochi's counters, all zero.
func sampleBroker(t *testing.T) prometheus.Collector {
	t.Helper()
	s, err := broker.New(broker.Config{Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s.Collector()
}

// sampleNode is labd's metrics for a node that applied generation 4,
// runs one check and has counted executions, rollbacks and rejections.
func sampleNode() prometheus.Gatherer {
	sys := "/nix/store/" + strings.Repeat("a", 32) + "-nixos-system"
	set := nodemetrics.New()
	set.Transition(proto.StateVerifying, proto.StateRollingBack)
	set.Transition(proto.StateRollingBack, proto.StateRolledBack)
	set.Rejected()
	now := time.Now().UnixMilli()
	return set.Gatherer(nodemetrics.Facts{Connected: true, Status: &proto.NodeStatus{Node: "n1", LabdVersion: "dev", AppliedGen: 4,
		Current: sys, Booted: sys, Execution: proto.Execution{Gen: 4, State: proto.StateSucceeded, Since: now},
		Checks:      proto.CheckResults{"web": {OK: true, At: now}},
		Generations: []proto.Generation{{Number: 7, Toplevel: sys, Current: true, Created: now}}}})
}

// exposed gathers every collector lab serves with sample data: the
// fleet's (labctl's dashboard /metrics), the broker's (--debug-listen
// /metrics) and labd's textfile, by metric name.
func exposed(t *testing.T) map[string][]prometheus.Gatherer {
	t.Helper()
	fleet := prometheus.NewPedanticRegistry()
	f := sampleFleet(t)
	// The controller service's /metrics also carries the alerts' counters.
	notifier, err := alert.New(alert.Config{Fleet: f, Webhooks: []alert.Webhook{{URL: "https://alerts.example/lab", Format: alert.Generic}}})
	if err != nil {
		t.Fatal(err)
	}
	fleet.MustRegister(NewFleetCollector(f), notifier)
	br := prometheus.NewPedanticRegistry()
	br.MustRegister(sampleBroker(t))
	return map[string][]prometheus.Gatherer{"fleet": {fleet}, "broker": {br}, "labd": {sampleNode()}}
}

// names gathers g and returns the metric names it exposes.
func names(t *testing.T, g prometheus.Gatherer) []string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		out = append(out, mf.GetName())
	}
	sort.Strings(out)
	return out
}

// Every metric lab exposes passes promlint (Prometheus' naming rules:
// snake case, base units, _total on counters and only there, help text).
func TestMetricNamesLint(t *testing.T) {
	// The linter finds what it should: a counter without _total, in milliseconds.
	bad := prometheus.NewRegistry()
	bad.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "lab_bad_duration_milliseconds", Help: "x"}))
	if mfs, _ := bad.Gather(); len(mfs) != 1 {
		t.Fatal("the bad sample was not gathered")
	} else if problems, _ := promlint.NewWithMetricFamilies(mfs).Lint(); len(problems) < 2 {
		t.Fatalf("promlint found %v in a counter without _total in milliseconds, want 2 problems", problems)
	}
	for source, gs := range exposed(t) {
		for _, g := range gs {
			mfs, err := g.Gather()
			if err != nil {
				t.Fatalf("%s: %v", source, err)
			}
			if len(mfs) < 5 {
				t.Fatalf("%s: only %d metrics gathered: the sample does not exercise the collector", source, len(mfs))
			}
			problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
			if err != nil {
				t.Fatalf("%s: %v", source, err)
			}
			for _, p := range problems {
				t.Errorf("%s: %s: %s", source, p.Metric, p.Text)
			}
			t.Logf("%s: %d metrics linted", source, len(mfs))
			for _, mf := range mfs {
				if !strings.HasPrefix(mf.GetName(), "lab_") {
					t.Errorf("%s: %s does not start with lab_", source, mf.GetName())
				}
			}
		}
	}
}
