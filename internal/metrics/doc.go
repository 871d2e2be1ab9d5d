// Package metrics exposes the fleet view as Prometheus metrics: one
// collector (FleetCollector) that reads the controller's Fleet at each
// scrape — per machine, per rollout — so that nothing is counted twice
// and a scrape always shows the latest retained state. The broker's own
// metrics are broker.Server.Collector; labd's are written by node/nodemetrics
// for node_exporter's textfile collector. The tests lint all three with
// promlint and hold docs/grafana-dashboard.json to the names they expose.
package metrics
