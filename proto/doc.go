// Package proto is lab's wire contract: the MQTT topic layout, the message
// types that travel on it, their msgpack encoding, validation and ed25519
// signatures.
//
// Everything a node, the controller or a third-party client needs to agree on
// lives here, and nothing else: proto imports no other package of this module
// (a test enforces it). Decoders are strict: they reject unknown schema
// versions, oversize payloads, unknown fields and invalid values with the
// sentinel errors in errors.go, which callers test with errors.Is.
//
// The rule of the protocol (DESIGN §4): desired state is the truth, commands
// are hints. Desired and Gate messages are retained, so a node that was asleep
// converges from what it finds on connect; handlers are idempotent on
// (rollout, gen) and on command id.
package proto
