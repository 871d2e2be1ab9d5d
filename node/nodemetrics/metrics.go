package nodemetrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lab-fleet/lab/proto"
)

var (
	info = prometheus.NewDesc("lab_node_info", "This labd (1): its machine, version, and the systems the profile points at and the machine booted.",
		[]string{"machine", "version", "current_system", "booted_system", "nixos_version"}, nil)
	execState = prometheus.NewDesc("lab_node_execution_state", "The node's execution state: 1 for the state it is in.", []string{"state"}, nil)
	execSince = prometheus.NewDesc("lab_node_execution_state_since_timestamp_seconds", "When the execution entered its current state, in Unix seconds.", nil, nil)
	execGen   = prometheus.NewDesc("lab_node_execution_generation", "The desired-state generation of the node's latest execution.", nil, nil)
	applied   = prometheus.NewDesc("lab_node_applied_generation", "The newest desired-state generation the node applied.", nil, nil)
	reboot    = prometheus.NewDesc("lab_node_needs_reboot", "Whether the machine booted another system than its profile's (1).", nil, nil)
	connected = prometheus.NewDesc("lab_node_broker_connected", "Whether labd is connected to the broker (1).", nil, nil)
	checkOK   = prometheus.NewDesc("lab_node_health_check_ok", "Whether the health check passed on its last run (1) or failed (0); absent before it ran.", []string{"check"}, nil)
	checkAt   = prometheus.NewDesc("lab_node_health_check_timestamp_seconds", "When the health check last ran, in Unix seconds; absent before it ran.", []string{"check"}, nil)
	profGen   = prometheus.NewDesc("lab_node_profile_generation", "The number of the system profile's current generation.", nil, nil)
	profAt    = prometheus.NewDesc("lab_node_profile_generation_timestamp_seconds",
		"When the system profile's current generation was made (the profile last moved: an activation or a rollback), in Unix seconds.", nil, nil)
	problems = prometheus.NewDesc("lab_node_problems", "Problems of the node itself its status reports (e.g. its state cannot be saved).", nil, nil)
)

// Facts are what the gauges are read from: the node's status as labd
// would publish it now, and whether it is connected to the broker.
type Facts struct {
	Status    *proto.NodeStatus
	Connected bool
}

// results are the ends of an execution, counted from 0 so that a rate
// over them exists before the first one happens.
var results = []proto.ExecState{proto.StateSucceeded, proto.StateAlreadyCurrent, proto.StateFailed, proto.StateRolledBack,
	proto.StateRollbackFailed, proto.StateTimedOut, proto.StateCancelled}

// Set holds the counters of one labd process. Its methods are safe for
// concurrent use.
type Set struct {
	executions *prometheus.CounterVec
	rollbacks  prometheus.Counter
	rejected   prometheus.Counter
}

// New returns a Set with every counter at 0.
func New() *Set {
	s := &Set{
		executions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lab_node_executions_total",
			Help: "Executions that ended since labd started, by the state they ended in."}, []string{"result"}),
		rollbacks: prometheus.NewCounter(prometheus.CounterOpts{Name: "lab_node_rollbacks_total",
			Help: "Rollbacks to the previous system started since labd started."}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{Name: "lab_node_rejected_messages_total",
			Help: "Messages labd rejected since it started, each reported as a rejected event (malformed, unsigned, forged, expired, replayed, not for this node)."}),
	}
	for _, r := range results {
		s.executions.WithLabelValues(string(r))
	}
	return s
}

// Transition counts one change of the execution's state: an execution
// that ended (by its end state) or a rollback that started.
func (s *Set) Transition(from, to proto.ExecState) {
	if to == from {
		return
	}
	if to == proto.StateRollingBack {
		s.rollbacks.Inc()
	}
	if to.Terminal() {
		s.executions.WithLabelValues(string(to)).Inc()
	}
}

// Rejected counts one rejected message.
func (s *Set) Rejected() { s.rejected.Inc() }

// Gatherer returns the counters and the gauges of f, ready to write.
func (s *Set) Gatherer(f Facts) prometheus.Gatherer {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.executions, s.rollbacks, s.rejected, gauges(f))
	return reg
}

// gauges collects the gauges of one set of facts.
type gauges Facts

func (g gauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{info, execState, execSince, execGen, applied, reboot, connected, checkOK, checkAt, profGen, profAt, problems} {
		ch <- d
	}
}

func (g gauges) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(connected, b2f(g.Connected))
	st := g.Status
	if st == nil {
		return
	}
	gauge(info, 1, st.Node, st.LabdVersion, st.Current, st.Booted, st.NixOSVersion)
	if st.Execution.State != "" {
		gauge(execState, 1, string(st.Execution.State))
	}
	if st.Execution.Since > 0 {
		gauge(execSince, float64(st.Execution.Since)/1000)
	}
	gauge(execGen, float64(st.Execution.Gen))
	gauge(applied, float64(st.AppliedGen))
	gauge(reboot, b2f(st.NeedsReboot))
	for name, r := range st.Checks {
		if r.At != 0 {
			gauge(checkOK, b2f(r.OK), name)
			gauge(checkAt, float64(r.At)/1000, name)
		}
	}
	for _, gen := range st.Generations {
		if gen.Current {
			gauge(profGen, float64(gen.Number))
			if gen.Created > 0 {
				gauge(profAt, float64(gen.Created)/1000)
			}
		}
	}
	gauge(problems, float64(len(st.Problems)))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
