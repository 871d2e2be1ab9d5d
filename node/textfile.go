package node

import (
	"context"
	"path/filepath"

	"github.com/lab-fleet/lab/internal/clock"
	"github.com/lab-fleet/lab/node/nodemetrics"
)

// textfileWriter writes labd.prom into Config.MetricsTextfileDir; one
// goroutine at a time uses it (textfile, then Run once it has stopped).
type textfileWriter struct {
	path    string // "" when no directory is configured
	lastErr string // the last failure, logged once
	closed  bool   // the connection is closed for good: labd stops
}

func (d *Daemon) newTextfile() *textfileWriter {
	if d.cfg.MetricsTextfileDir == "" {
		return &textfileWriter{}
	}
	return &textfileWriter{path: filepath.Join(d.cfg.MetricsTextfileDir, nodemetrics.FileName)}
}

// metricsChanged asks for the textfile to be written again: after every
// status (every transition, check run and connection) and when the
// connection is lost. It never blocks.
func (d *Daemon) metricsChanged() {
	select {
	case d.metricsDirty <- struct{}{}:
	default:
	}
}

// textfile writes the metrics file at once, whenever metricsChanged is
// called and at least every MetricsInterval, until ctx ends. It reads
// what the status reads (a snapshot under d.mu) and the counters; the
// loop never waits for it.
func (d *Daemon) textfile(ctx context.Context, w *textfileWriter) {
	if w.path == "" {
		return
	}
	w.write(d)
	for {
		tick, timer := clock.After(d.m.clock, d.cfg.MetricsInterval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-d.metricsDirty:
			timer.Stop()
		case <-tick:
		}
		w.write(d)
	}
}

// write writes the file once. A failure is logged once for each distinct
// error (and the recovery once), never fatal: the metrics are a view.
func (w *textfileWriter) write(d *Daemon) {
	if w.path == "" {
		return
	}
	facts := nodemetrics.Facts{Status: d.status(), Connected: !w.closed && d.bus != nil && d.bus.Connected()}
	err := nodemetrics.WriteTextfile(w.path, d.metrics.Gatherer(facts))
	switch {
	case err != nil && err.Error() != w.lastErr:
		d.log.Warn("cannot write the metrics textfile", "path", w.path, "err", err)
		w.lastErr = err.Error()
	case err == nil && w.lastErr != "":
		d.log.Info("metrics textfile written again", "path", w.path)
		w.lastErr = ""
	}
}
