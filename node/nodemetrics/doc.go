// Package nodemetrics is labd's own few Prometheus metrics, written for
// node_exporter's textfile collector (labd has no HTTP listener). The
// gauges are read from the node's status — the same NodeStatus labd
// retains on the broker — and whether it is connected, so that the file
// and the controller's lab_machine_* metrics never disagree about a fact;
// the counters (Set) count what the node's loop saw happen since labd
// started. WriteTextfile replaces the file atomically (a temporary file in
// the same directory, fsync, rename). The goroutine that decides when to
// write is node's (Daemon.textfile, node/textfile.go).
package nodemetrics
