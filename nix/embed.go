// Package nixfiles gives Go code the Nix files that lab ships: today the
// fake NixOS system used by `labctl demo` and the tests (fake-system.nix).
// The NixOS modules and the flake live beside it in this directory.
package nixfiles

import _ "embed"

// FakeSystem is fake-system.nix: a NixOS-shaped toplevel built by the host's
// /bin/sh, whose switch-to-configuration logs, fails or sleeps on demand.
//
//go:embed fake-system.nix
var FakeSystem []byte
