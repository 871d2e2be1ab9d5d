// Package demo is `labctl demo`: on one machine it starts the embedded
// broker and N local nodes (each with its own system profile and state
// directory, running the real labd code in-process), builds fake NixOS
// systems with the local Nix, runs one real rollout in which one node's new
// system fails its health check and rolls back, and explains what happened.
//
// It sits beside cmd/ (it wires broker, node and controller together), so it
// may import all three.
package demo
