// Package homeassistant shows the fleet in Home Assistant through its MQTT
// discovery: each machine is a device ("lab_<machine>", manufacturer lab,
// model NixOS machine) with four entities —
//
//   - update "NixOS system": installed = the system it runs, latest = the
//     system its retained desired state names (the running one when none);
//   - binary_sensor "Connection" (connectivity), from its presence;
//   - binary_sensor "Problem" (problem): its last execution failed, timed
//     out, was rejected, rolled back or could not roll back, or it reports
//     a problem of its own (render.Attention's two first ranks), with the
//     reason, state and rollout as attributes;
//   - sensor "Last switch" (timestamp): when it last activated a system
//     (switchedAt: the end of a succeeded or rolled-back execution, else
//     the creation of the profile generation it runs).
//
// Home Assistant cannot read lab's msgpack, so for every machine the
// Publisher also publishes a retained JSON state on <lab
// prefix>/ha/<machine>/state, which the entities' templates read. The
// configs go, retained, to <discovery prefix>/<component>/<unique
// id>/config.
//
// One goroutine (Publisher.Run) owns everything: it follows the
// controller's Fleet view (Watch), publishes only what changed since it
// last did (at most every Interval), clears (empty retained payloads) the
// configs and the state of a machine that left the view, so that Home
// Assistant removes its device, and publishes everything again when Home
// Assistant says "online" on its birth topic (HandleBirth). The caller
// subscribes to that topic and to the retained states (RetainedFilter,
// HandleRetained): SweepAfter the start, machines an earlier run
// announced that are not in the view are removed too.
//
// controller.Fleet today keeps every machine it has seen (an empty
// retained status or presence counts as invalid), so a machine whose
// status and presence were cleared leaves Home Assistant at the service's
// next start, by that sweep, not at once.
//
// There is no availability topic: the service's connection has no Last
// Will to say offline when the controller dies, and a retained "online"
// that outlives it would be a lie. Home Assistant marks the entities
// unavailable while its own connection to the broker is down.
package homeassistant
