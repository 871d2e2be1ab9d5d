# A household fleet: three machines in two groups, rolled out with lab.
#
#   labctl inventory --flake ./examples/fleet
#   labctl publish --key operator.key --flake ./examples/fleet --on @servers --strategy canary
{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    lab.url = "path:../..";
    lab.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { self, nixpkgs, lab }:
    let
      machine = name: modules: nixpkgs.lib.nixosSystem {
        system = "x86_64-linux";
        modules = [
          lab.nixosModules.default
          ({ ... }: {
            networking.hostName = name;
            services.labd = {
              enable = true;
              package = lab.packages.x86_64-linux.labd;
              broker = [ "tls://lab.example.net:8883" ];
              passwordFile = "/run/secrets/labd-mqtt-password";
              trustedKeys = [ "operator-2026:3o0Hq4zY0m8oD2cR9c5m8oYv7jKxk3lJ9mZbZcN0Q1k=" ];
            };
            # Stand-ins for a real hardware configuration.
            boot.loader.grub.device = "nodev";
            fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };
            system.stateVersion = "25.05";
          })
        ] ++ modules;
      };
    in {
      nixosConfigurations = {
        # The broker host: runs the embedded broker and is rolled out last.
        nas = machine "nas" [{
          services.lab-broker = { enable = true; package = lab.packages.x86_64-linux.labctl; openFirewall = true; };
          lab.machine = {
            role = "storage";
            groups = [ "servers" ];
            rebootOrder = 10;
            healthChecks.nfs = { type = "tcp"; address = "127.0.0.1:2049"; timeout = "5s"; };
          };
        }];
        web = machine "web" [{
          services.nginx.enable = true;
          lab.machine = {
            role = "web";
            groups = [ "servers" ];
            rebootOrder = 1;
            dependencies = [ "nas" ];
            healthChecks.http = { type = "http"; url = "http://127.0.0.1/"; retries = 5; interval = "3s"; grace = "5s"; };
          };
        }];
        kitchen = machine "kitchen" [{
          lab.machine = {
            role = "kiosk";
            groups = [ "family" ];
            orchestration = { rebootDelay = "2m"; criticalityLevel = "low"; };
            healthChecks.display = { type = "systemd"; unit = "display-manager.service"; };
          };
        }];
      };
    };
}
