package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
)

var (
	machineInfo = prometheus.NewDesc("lab_machine_info", "A machine the controller knows, with the system it runs and the one it should run (1).",
		[]string{"machine", "current", "desired"}, nil)
	machineOnline = prometheus.NewDesc("lab_machine_online", "Whether the machine's retained presence says online (1) or offline (0).", []string{"machine"}, nil)
	machineState  = prometheus.NewDesc("lab_machine_execution_state", "The machine's execution state: 1 for the state it is in.", []string{"machine", "state"}, nil)
	machineGen    = prometheus.NewDesc("lab_machine_applied_generation", "The newest desired-state generation the machine applied.", []string{"machine"}, nil)
	machineCheck  = prometheus.NewDesc("lab_machine_health_check_ok", "Whether the machine's health check passed on its last run (1) or failed (0); absent before it ran.", []string{"machine", "check"}, nil)
	machineReboot = prometheus.NewDesc("lab_machine_needs_reboot", "Whether the machine booted another system than its profile's (1).", []string{"machine"}, nil)
	machineSeen   = prometheus.NewDesc("lab_machine_last_seen_timestamp_seconds", "When the machine last sent anything (its own clock), in Unix seconds.", []string{"machine"}, nil)
	machineNeeds  = prometheus.NewDesc("lab_machine_attention", "Whether the machine needs someone (1), with the dashboard's reason.", []string{"machine", "reason"}, nil)
	machines      = prometheus.NewDesc("lab_machines", "Machines known to the controller.", nil, nil)

	rolloutTargets  = prometheus.NewDesc("lab_rollout_targets", "A rollout's targets by state.", []string{"rollout", "state"}, nil)
	rolloutDuration = prometheus.NewDesc("lab_rollout_duration_seconds", "From a rollout's creation to its latest state.", []string{"rollout"}, nil)
	rolloutHalted   = prometheus.NewDesc("lab_rollout_halted", "Whether the rollout halted early (1).", []string{"rollout"}, nil)
	rolloutRunning  = prometheus.NewDesc("lab_rollout_running", "Whether a controller still drives the rollout (1).", []string{"rollout"}, nil)
	rolloutPhase    = prometheus.NewDesc("lab_rollout_state", "The rollout's phase: 1 for the one it is in.", []string{"rollout", "state"}, nil)
	invalid         = prometheus.NewDesc("lab_controller_invalid_messages_total", "Messages the controller's fleet view ignored as invalid.", nil, nil)
)

// FleetCollector reads a Fleet at each scrape.
type FleetCollector struct{ fleet *controller.Fleet }

// NewFleetCollector returns a collector of f.
func NewFleetCollector(f *controller.Fleet) *FleetCollector { return &FleetCollector{fleet: f} }

// Describe sends every metric's description.
func (c *FleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{machineInfo, machineOnline, machineState, machineGen, machineCheck, machineReboot, machineSeen, machineNeeds, machines,
		rolloutTargets, rolloutDuration, rolloutHalted, rolloutRunning, rolloutPhase, invalid} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Collect reads the fleet.
func (c *FleetCollector) Collect(ch chan<- prometheus.Metric) {
	rows := render.StatusRows(c.fleet.Snapshot())
	ch <- prometheus.MustNewConstMetric(machines, prometheus.GaugeValue, float64(len(rows)))
	for _, r := range rows {
		ch <- prometheus.MustNewConstMetric(machineInfo, prometheus.GaugeValue, 1, r.Node, r.Current, r.Desired)
		ch <- prometheus.MustNewConstMetric(machineOnline, prometheus.GaugeValue, b2f(r.Online), r.Node)
		ch <- prometheus.MustNewConstMetric(machineState, prometheus.GaugeValue, 1, r.Node, string(r.State))
		ch <- prometheus.MustNewConstMetric(machineGen, prometheus.GaugeValue, float64(r.AppliedGen), r.Node)
		ch <- prometheus.MustNewConstMetric(machineReboot, prometheus.GaugeValue, b2f(r.NeedsReboot), r.Node)
		ch <- prometheus.MustNewConstMetric(machineNeeds, prometheus.GaugeValue, b2f(r.Rank != render.RankNone), r.Node, r.Attention)
		if !r.LastSeen.IsZero() {
			ch <- prometheus.MustNewConstMetric(machineSeen, prometheus.GaugeValue, float64(r.LastSeen.UnixMilli())/1000, r.Node)
		}
		for name, res := range r.Checks {
			if res.At != 0 {
				ch <- prometheus.MustNewConstMetric(machineCheck, prometheus.GaugeValue, b2f(res.OK), r.Node, name)
			}
		}
	}
	for _, rs := range c.fleet.Rollouts() {
		id := rs.Rollout
		k := rs.Counters
		for state, n := range map[string]int{"succeeded": k.Succeeded, "failed": k.Failed, "rolled-back": k.RolledBack,
			"running": k.Running, "pending": k.Pending, "cancelled": k.Cancelled} {
			ch <- prometheus.MustNewConstMetric(rolloutTargets, prometheus.GaugeValue, float64(n), id, state)
		}
		if rs.CreatedAt > 0 && rs.TS >= rs.CreatedAt {
			ch <- prometheus.MustNewConstMetric(rolloutDuration, prometheus.GaugeValue, float64(rs.TS-rs.CreatedAt)/1000, id)
		}
		ch <- prometheus.MustNewConstMetric(rolloutHalted, prometheus.GaugeValue, b2f(rs.Halted), id)
		ch <- prometheus.MustNewConstMetric(rolloutRunning, prometheus.GaugeValue, b2f(rs.State == proto.RolloutRunning), id)
		ch <- prometheus.MustNewConstMetric(rolloutPhase, prometheus.GaugeValue, 1, id, string(rs.State))
	}
	ch <- prometheus.MustNewConstMetric(invalid, prometheus.CounterValue, float64(c.fleet.Invalid()))
}
