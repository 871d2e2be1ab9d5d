// Package controller is the operator's side of lab as a library: the fleet
// view built from retained status, presence and desired state (Fleet); the
// rollout plan and its waves (Plan, PlanWaves: all at once, rolling
// batches or a canary first, ordered by reboot order and dependencies);
// rollout execution with gates, failure thresholds, wave deadlines, halts
// and rollback (Controller.Run, Resume, Cancel); the rollout records that
// make a rollout resumable (BoltStore); and ordered reboots
// (Controller.Reboot). It does not render anything: tables and JSON for
// people and scripts are in internal/render. Outcome.ExitCode still gives
// the exit code labctl uses for each outcome.
//
// A rollout (Run) saves its record, publishes every target's signed
// Desired state (retained; in a plan of several waves a target waits for
// the gate of its wave), then follows the targets' retained status — its
// main loop is run.follow — opening each next wave when the previous one
// is done or its deadline passed, halting when failures cross the plan's threshold, and publishing
// the rollout's own retained RolloutState as it goes. It never counts on
// seeing every message: progress is recomputed from the latest retained
// status of each node (DESIGN §8, fan-in), so a lost or duplicated message
// changes nothing.
//
// In this version the rollout is driven by the process that calls Run —
// `labctl publish`, or `labctl rollout resume` after it was interrupted —
// and its later waves open only while that process runs. The transport is
// the small Bus interface (today *bus.Client, an MQTT v5 client), so the
// same code can later run beside the broker on its inline client.
//
// Errors and halt reasons name plan fields in the plan's words (Field:
// "batch size", "max failures"), never a front end's options; a refusal
// caused by one field is a FieldError, which labctl rewords with its flag.
package controller
