package alert

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/clock"
	"github.com/lab-fleet/lab/internal/render"
)

// Defaults.
const (
	DefaultOfflineAfter = 10 * time.Minute
	DefaultAttempts     = 6               // 1 + 5 retries: 2+4+8+16+32 s with the default backoff
	DefaultBackoff      = 2 * time.Second // the first retry's delay
	queueLen            = 256
)

// Config configures a Notifier.
type Config struct {
	Fleet    *controller.Fleet
	Webhooks []Webhook
	// OfflineAfter is how long a machine is offline before it is
	// announced (DefaultOfflineAfter when 0).
	OfflineAfter time.Duration
	// Attempts per delivery and the first retry's delay (defaults when 0).
	Attempts int
	Backoff  time.Duration
	Client   *http.Client // default: 10 s timeout per attempt
	Clock    clock.Clock
	Logger   *slog.Logger
}

// Notifier watches a fleet and posts its events to webhooks.
type Notifier struct {
	cfg    Config
	clock  clock.Clock
	log    *slog.Logger
	hooks  []*delivery
	events atomic.Int64

	sent, failed, dropped atomic.Int64
	primed                chan struct{} // closed once Run has taken its first look
	start                 time.Time     // what happened before is not news at first sight
}

// New checks the webhooks and returns a Notifier.
func New(cfg Config) (*Notifier, error) {
	if cfg.Fleet == nil {
		return nil, errors.New("alert: no fleet")
	}
	var errs []error
	for _, w := range cfg.Webhooks {
		errs = append(errs, w.Check())
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.OfflineAfter <= 0 {
		cfg.OfflineAfter = DefaultOfflineAfter
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = DefaultAttempts
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	n := &Notifier{cfg: cfg, clock: clock.Or(cfg.Clock), log: cfg.Logger, primed: make(chan struct{})}
	n.start = n.clock.Now()
	if n.log == nil {
		n.log = slog.Default()
	}
	for _, w := range cfg.Webhooks {
		n.hooks = append(n.hooks, &delivery{hook: w, queue: make(chan Event, queueLen), client: cfg.Client, clock: n.clock,
			log: n.log, backoff: cfg.Backoff, tries: cfg.Attempts, sent: &n.sent, failed: &n.failed, dropped: &n.dropped})
	}
	return n, nil
}

// Stats are the Notifier's counters: events seen, deliveries that
// succeeded, failed (after every retry) and were dropped (queue full).
type Stats struct{ Events, Sent, Failed, Dropped int64 }

// Stats returns the counters.
func (n *Notifier) Stats() Stats {
	return Stats{n.events.Load(), n.sent.Load(), n.failed.Load(), n.dropped.Load()}
}

// tick is how often the offline threshold is checked between changes.
func (n *Notifier) tick() time.Duration {
	return min(max(n.cfg.OfflineAfter/10, time.Second), 30*time.Second)
}

// Run watches the fleet until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	for _, d := range n.hooks {
		go d.run(ctx)
	}
	changed, stop := n.cfg.Fleet.Watch()
	defer stop()
	t := newTracker(n.cfg.OfflineAfter, n.start)
	for {
		now := n.clock.Now()
		for _, ev := range t.observe(render.StatusRows(n.cfg.Fleet.Snapshot()), n.cfg.Fleet.Rollouts(), now) {
			n.publish(ev)
		}
		select {
		case <-n.primed:
		default:
			close(n.primed)
		}
		tick, timer := clock.After(n.clock, n.tick())
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-changed:
		case <-tick:
		}
		timer.Stop()
	}
}

// publish hands an event to every webhook that wants it, never waiting.
func (n *Notifier) publish(ev Event) {
	n.events.Add(1)
	n.log.Info("alert", "event", ev.Kind, "summary", ev.Summary)
	for _, d := range n.hooks {
		if !d.hook.wants(ev.Kind) {
			continue
		}
		select {
		case d.queue <- ev:
		default:
			n.dropped.Add(1)
			n.log.Warn("webhook queue full: event dropped", "webhook", d.hook.String(), "event", ev.Kind)
		}
	}
}

var (
	eventsDesc     = prometheus.NewDesc("lab_alert_events_total", "Alert events the controller saw (each goes to every webhook that wants it).", nil, nil)
	deliveriesDesc = prometheus.NewDesc("lab_alert_deliveries_total", "Webhook deliveries by result: sent, failed (after every retry) or dropped (the webhook's queue was full).", []string{"result"}, nil)
)

// Describe and Collect make the Notifier a Prometheus collector of its
// counters.
func (n *Notifier) Describe(ch chan<- *prometheus.Desc) {
	ch <- eventsDesc
	ch <- deliveriesDesc
}

// Collect sends the counters.
func (n *Notifier) Collect(ch chan<- prometheus.Metric) {
	s := n.Stats()
	ch <- prometheus.MustNewConstMetric(eventsDesc, prometheus.CounterValue, float64(s.Events))
	ch <- prometheus.MustNewConstMetric(deliveriesDesc, prometheus.CounterValue, float64(s.Sent), "sent")
	ch <- prometheus.MustNewConstMetric(deliveriesDesc, prometheus.CounterValue, float64(s.Failed), "failed")
	ch <- prometheus.MustNewConstMetric(deliveriesDesc, prometheus.CounterValue, float64(s.Dropped), "dropped")
}
