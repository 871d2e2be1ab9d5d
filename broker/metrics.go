package broker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lab-fleet/lab/broker/guard"
)

// guardCollector exports the guard's counters to Prometheus, read at each
// scrape (guard.Stats).
type guardCollector struct {
	g        *guard.Guard
	admitted *prometheus.Desc
	refused  *prometheus.Desc
	timeouts *prometheus.Desc
	failures *prometheus.Desc
	unchkd   *prometheus.Desc
	bans     *prometheus.Desc
	pending  *prometheus.Desc
	banned   *prometheus.Desc
}

// Collector returns a Prometheus collector of the broker's limits before
// login: connections admitted and refused at accept (by reason), closed at
// the connect deadline, failed logins, logins refused unchecked, bans, and
// the connections waiting to log in now. Register it where the metrics are
// served.
func (s *Server) Collector() prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("lab_broker_"+name, help, labels, nil)
	}
	return &guardCollector{
		g:        s.guard,
		admitted: d("connections_admitted_total", "Connections admitted at accept (before login)."),
		refused:  d("connections_refused_total", "Connections closed at accept, by reason: banned (address banned), busy (max_pending), per_address (max_pending_per_address), rate (connect_rate).", "reason"),
		timeouts: d("connect_timeouts_total", "Connections closed for not completing TLS and CONNECT within connect_timeout."),
		failures: d("login_failures_total", "Failed logins (bad username or password)."),
		unchkd:   d("logins_banned_total", "Logins refused without a password check: the username from that address, or a bcrypt username, is banned."),
		bans:     d("login_bans_total", "Bans imposed (address, username from address, or username)."),
		pending:  d("connections_pending", "Untrusted connections accepted and not logged in yet."),
		banned:   d("banned_addresses", "Addresses banned now."),
	}
}

func (c *guardCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.admitted, c.refused, c.timeouts, c.failures, c.unchkd, c.bans, c.pending, c.banned} {
		ch <- d
	}
}

func (c *guardCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.g.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.admitted, st.Admitted)
	counter(c.refused, st.RefusedBanned, "banned")
	counter(c.refused, st.RefusedBusy, "busy")
	counter(c.refused, st.RefusedPerAddr, "per_address")
	counter(c.refused, st.RefusedRate, "rate")
	counter(c.timeouts, st.TimedOut)
	counter(c.failures, st.LoginFailures)
	counter(c.unchkd, st.LoginsRefused)
	counter(c.bans, st.Bans)
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(c.banned, prometheus.GaugeValue, float64(st.BannedAddresses))
}
