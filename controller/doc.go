// Package controller is the operator's side of lab: the fleet view built
// from retained status, presence and desired state; rollout planning and
// execution; and the rendering of both for the CLI.
//
// A rollout (Run) publishes every target's signed Desired state (retained),
// then follows the targets' retained status until each is terminal or the
// deadline passes, publishing the rollout's own retained RolloutState as it
// goes. It never counts on seeing every message: progress is recomputed
// from the latest retained status of each node (DESIGN §8, fan-in), so a
// lost or duplicated message changes nothing.
//
// In this version a rollout has one wave and is driven by the CLI process
// (`labctl publish`); the transport is the small Bus interface, so the same
// code can run beside the broker on its inline client.
package controller
