# Evaluates lab's NixOS modules with nixpkgs' own lib.evalModules, with the
# few NixOS options they set declared by a stub module, and returns what
# they generate. Used by nix/modules_test.go:
#   nix-instantiate --eval --strict --json nix/tests/eval-modules.nix --arg libPath $NIXPKGS_LIB
{ libPath }:
let
  lib = import libPath;
  inherit (lib) mkOption types;
  # What NixOS would declare; loosely typed, enough to hold the values.
  nixosStub = {
    options = {
      systemd.services = mkOption { type = types.attrsOf types.anything; default = { }; };
      environment.etc = mkOption { type = types.attrsOf types.anything; default = { }; };
      networking.hostName = mkOption { type = types.str; default = "nixos"; };
      networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
    };
  };
  fakeLab = { type = "derivation"; name = "lab-0.2.0"; outPath = "/nix/store/00000000000000000000000000000000-lab-0.2.0"; };
  machine = {
    networking.hostName = "kitchen";
    lab.machine = {
      role = "kiosk";
      groups = [ "family" "arm" ];
      rebootOrder = 10;
      dependencies = [ "nas" ];
      orchestration = { rebootDelay = "2m"; criticalityLevel = "low"; };
      healthChecks = {
        web = { type = "http"; url = "http://127.0.0.1:8080/healthz"; expectStatus = 204; retries = 5; interval = "3s"; };
        display = { type = "systemd"; unit = "display-manager.service"; grace = "10s"; };
      };
    };
    services.labd = {
      enable = true;
      package = fakeLab;
      broker = [ "tls://lab.example.net:8883" ];
      passwordFile = "/run/secrets/labd-mqtt-password";
      tls.caFile = "/etc/lab/ca.crt";
      trustedKeys = [ "operator-2026:3o0Hq4zY0m8oD2cR9c5m8oYv7jKxk3lJ9mZbZcN0Q1k=" ];
      controllerKeys = [ "controller-2026:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" ];
      timeouts.fetch = "45m";
    };
    services.lab-broker = { enable = true; package = fakeLab; port = 8883; openFirewall = true; jsonMirror = false; };
  };
  c = (lib.evalModules { modules = [ nixosStub ../modules/default.nix machine ]; }).config;
  labd = c.systemd.services.labd;
  broker = c.systemd.services.lab-broker;
in {
  labdYaml = c.environment.etc."labd/labd.yaml".text;
  labdExecStart = labd.serviceConfig.ExecStart;
  labdLoadCredential = labd.serviceConfig.LoadCredential;
  labdRestartIfChanged = labd.restartIfChanged;
  labdRestart = labd.serviceConfig.Restart;
  brokerExecStart = broker.serviceConfig.ExecStart;
  firewall = c.networking.firewall.allowedTCPPorts;
}
