// Package metrics exposes the fleet view as Prometheus metrics: one
// collector (FleetCollector) that reads the controller's Fleet at each
// scrape — per machine, per rollout — so that nothing is counted twice
// and a scrape always shows the latest retained state. The broker's own
// metrics are broker.Server.Collector; labd's are written by node for
// node_exporter's textfile collector.
package metrics
