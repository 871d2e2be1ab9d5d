{
  description = "lab: NixOS fleet rollouts over MQTT";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      version = "0.2.0";
    in {
      packages = forAll (pkgs:
        let
          lab = pkgs.buildGoModule {
            pname = "lab";
            inherit version;
            src = self;
            # `go mod vendor` output hashed with `nix hash path` (see
            # docs/nixos.md, "Updating vendorHash"); needs Go >= 1.26.
            # integration/vendorhash_test.go fails when it is stale.
            vendorHash = "sha256-g9hiiePBng8ncMijsULU6n68iB4u3mt65sWpR91mPuI=";
            subPackages = [ "cmd/labctl" "cmd/labd" ];
            ldflags = [ "-s" "-w" "-X main.version=${version}" ];
            # The tests need a broker, Nix and namespaces: they run in CI
            # (scripts/test), not in the sandbox.
            doCheck = false;
            meta = {
              description = "NixOS fleet rollouts over MQTT";
              mainProgram = "labctl";
            };
          };
        in {
          default = lab;
          labctl = lab;
          labd = lab;
        });

      nixosModules = {
        machine = ./nix/modules/machine.nix;
        labd = ./nix/modules/labd.nix;
        broker = ./nix/modules/broker.nix;
        default = { imports = [ ./nix/modules/default.nix ]; };
      };
    };
}
