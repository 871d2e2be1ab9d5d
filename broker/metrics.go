package broker

import (
	"github.com/mochi-mqtt/server/v2/system"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lab-fleet/lab/broker/guard"
)

// collector exports the guard's counters to Prometheus, read at each
// scrape (guard.Stats).
type collector struct {
	g        *guard.Guard
	admitted *prometheus.Desc
	refused  *prometheus.Desc
	timeouts *prometheus.Desc
	failures *prometheus.Desc
	unchkd   *prometheus.Desc
	bans     *prometheus.Desc
	pending  *prometheus.Desc
	banned   *prometheus.Desc

	info    func() *system.Info
	clients *prometheus.Desc
	msgsIn  *prometheus.Desc
	msgsOut *prometheus.Desc
	dropped *prometheus.Desc
	retain  *prometheus.Desc
	bytesIn *prometheus.Desc
	bytesOu *prometheus.Desc
	subs    *prometheus.Desc
	infl    *prometheus.Desc
}

// Collector returns a Prometheus collector of the broker: mochi's own
// counters (clients connected, PUBLISH messages in and out and dropped to
// slow subscribers, retained messages, subscriptions, in-flight messages,
// bytes in and out) and the limits before login (connections admitted and
// refused at accept by reason, closed at the connect deadline, failed
// logins, logins refused unchecked, bans, and the connections waiting to
// log in now). Register it where the metrics are served.
func (s *Server) Collector() prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("lab_broker_"+name, help, labels, nil)
	}
	return &collector{
		g:        s.guard,
		admitted: d("connections_admitted_total", "Connections admitted at accept (before login)."),
		refused:  d("connections_refused_total", "Connections closed at accept, by reason: banned (address banned), busy (max_pending), per_address (max_pending_per_address), rate (connect_rate).", "reason"),
		timeouts: d("connect_timeouts_total", "Connections closed for not completing TLS and CONNECT within connect_timeout."),
		failures: d("login_failures_total", "Failed logins (bad username or password)."),
		unchkd:   d("logins_banned_total", "Logins refused without a password check: the username from that address, or a bcrypt username, is banned."),
		bans:     d("login_bans_total", "Bans imposed (address, username from address, or username)."),
		pending:  d("connections_pending", "Untrusted connections accepted and not logged in yet."),
		banned:   d("banned_addresses", "Addresses banned now."),

		info:    s.mochi.Info.Clone,
		clients: d("clients_connected", "MQTT clients connected now (the controller's inline client not counted)."),
		msgsIn:  d("messages_received_total", "PUBLISH packets received from clients."),
		msgsOut: d("messages_sent_total", "PUBLISH packets sent to clients."),
		dropped: d("messages_dropped_total", "PUBLISH packets dropped because a subscriber's queue was full (mochi's messages_dropped)."),
		retain:  d("retained_messages", "Retained messages the broker holds."),
		bytesIn: d("received_bytes_total", "Bytes received from clients."),
		bytesOu: d("sent_bytes_total", "Bytes sent to clients."),
		subs:    d("subscriptions", "Subscriptions active now."),
		infl:    d("inflight_messages", "QoS 1 and 2 messages sent and not acknowledged yet."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.admitted, c.refused, c.timeouts, c.failures, c.unchkd, c.bans, c.pending, c.banned,
		c.clients, c.msgsIn, c.msgsOut, c.dropped, c.retain, c.bytesIn, c.bytesOu, c.subs, c.infl} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
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

	in := c.info()
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(max(v, 0)))
	}
	counter(c.msgsIn, uint64(max(in.MessagesReceived, 0)))
	counter(c.msgsOut, uint64(max(in.MessagesSent, 0)))
	counter(c.dropped, uint64(max(in.MessagesDropped, 0)))
	counter(c.bytesIn, uint64(max(in.BytesReceived, 0)))
	counter(c.bytesOu, uint64(max(in.BytesSent, 0)))
	gauge(c.clients, in.ClientsConnected)
	gauge(c.retain, in.Retained)
	gauge(c.subs, in.Subscriptions)
	gauge(c.infl, in.Inflight)
}
