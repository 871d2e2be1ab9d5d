// Package controller is the operator's side of lab as a library: the fleet
// view built from retained status, presence and desired state (Fleet); the
// rollout plan and its waves (Plan, PlanWaves: all at once, rolling
// batches or a canary first, ordered by reboot order and dependencies);
// rollout execution with gates, failure thresholds, wave deadlines, halts
// and rollback (Controller.Run, Resume, Cancel); retries of the failed
// targets (RetryPlan); the rollout records that make a rollout resumable
// (BoltStore); and ordered reboots (Controller.Reboot). It does not
// render anything: tables and JSON for people and scripts, and labctl's
// exit code for each outcome, are in internal/render.
//
// A rollout is a state machine like the node's (machine.go): one state
// value (rolloutState, state.go) from which the persisted Record and the
// retained RolloutState are derived, and one transition, next(state, now,
// fact), that takes one fact — the fleet's view changed, a tick of the
// clock, a cancel seen elsewhere, a pause or resume, the broker back after
// a reconnect, the overall timeout — and returns the actions to perform:
// publish Desired states and gates, clear the Desired of targets that
// never started, publish again what the broker lost, save, publish the
// rollout's state, roll back, finish. Its policy (decide.go) is a pure
// function of what is known at one step. The goroutine that owns the
// rollout (run.follow, rollout.go) is the only one that touches the state:
// it turns bus messages and the clock into facts and performs the
// actions. It never counts on seeing every message: progress is
// recomputed from the latest retained status of each node (DESIGN §8,
// fan-in), so a lost or duplicated message changes nothing. One clock
// (internal/clock) is read by all of it, so tests drive time with a fake.
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
// Errors and halt reasons name plan fields in the plan's words (Field:
// "batch size", "max failures"), never a front end's options; a refusal
// caused by one field is a FieldError, which labctl rewords with its flag.
package controller
