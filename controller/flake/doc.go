// Package flake reads the fleet the way Nix sees it: ONE `nix eval` over
// every nixosConfigurations entry of a flake for its lab.machine metadata
// and the store path of its system, then ONE `nix build` of the systems a
// rollout needs, and optionally one `nix copy` to a binary cache that the
// machines substitute from. Machines never evaluate Nix.
package flake
