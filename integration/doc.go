// Package integration holds lab's multi-process tests: the real `labctl
// broker`, real `labd` processes and `labctl publish` against real Nix
// (Debian's nix-bin), driven as an operator would drive them.
//
// The harness (harness_test.go) builds the binaries once per run, gives each
// test an Env with its own broker, Nix cache directory and signing key, and
// each node its own system profile, state directory and switch log. Nodes
// share the host's /nix/store; their "NixOS systems" are fake toplevels from
// nix/fake-system.nix, built by real nix-build.
//
// Tests that need a tool skip with a loud reason when it is missing;
// scripts/test installs every tool, so in CI nothing skips.
package integration
