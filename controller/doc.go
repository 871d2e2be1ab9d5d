// Package controller is the operator's side of lab as a library: the fleet
// view built from retained status, presence and desired state (Fleet); the
// rollout plan and its waves (Plan, PlanWaves: all at once, rolling
// batches or a canary first, ordered by reboot order and dependencies);
// rollout execution with gates, failure thresholds, wave deadlines, halts
// and rollback (Controller.Run, Resume, Cancel); the rollout records that
// make a rollout resumable (BoltStore); and ordered reboots
// (Controller.Reboot). It does not render anything: tables and JSON for
// people and scripts, and labctl's exit code for each outcome, are in
// internal/render.
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
// Two things drive rollouts with that code. The controller service
// (Service, DESIGN §11) runs beside the broker — `labctl broker` on mochi's
// inline client, `labctl controller` as an MQTT v5 client — and answers
// requests on <p>/ctl/req/<verb> (api.go): a Submission (Prepare, on the
// operator's side) carries every Desired signed by the operator; the
// service checks them against the operator keys it trusts, records the
// rollout and drives it on a goroutine of its own (Start, then
// Started.Follow; Restart after its own restart), signing gates and
// commands with its own key. It also keeps reboot jobs (jobs.go),
// schedules and maintenance windows (schedule.go) and pauses. With
// --local-controller the process that calls Run drives the rollout, and
// its later waves open only while that process runs. Either way the
// transport is the small Bus interface.
//
// Not yet as DESIGN §11 wants it: the rollout's decisions still live in
// run.follow's loop rather than in a pure next(state, fact) function.
//
// Errors and halt reasons name plan fields in the plan's words (Field:
// "batch size", "max failures"), never a front end's options; a refusal
// caused by one field is a FieldError, which labctl rewords with its flag.
package controller
