// Package health runs a node's local health checks (DESIGN §7) after an
// activation: http (GET, expected status), tcp (connect), command (argv run
// without a shell, exit 0 = healthy) and systemd (a unit is active, or no
// unit has failed).
//
// Checks are declared on the node (NixOS option lab.machine.healthChecks,
// labd's `checks:` config); messages from the wire only name which checks a
// rollout requires, they never define what runs.
//
// Runner.Run runs checks concurrently. Each check waits its Grace, then
// makes attempts (each bounded by Timeout) until one succeeds or Retries
// extra attempts have failed, Interval apart. Grace and intervals are waited on
// lab's one clock (internal/clock), so tests drive them with a clock.Fake;
// per-attempt timeouts are real context deadlines.
//
// Command checks run with the Runner's Env added to labd's environment. The
// node sets LAB_TOPLEVEL=<the new system's store path> there, so a check
// can inspect the system it is judging (e.g. `test -e $LAB_TOPLEVEL/...`
// via a script, since no shell expands arguments).
package health
