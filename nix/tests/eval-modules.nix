# Evaluates lab's NixOS modules with nixpkgs' own lib.evalModules, with the
# few NixOS options they set declared by a stub module, and returns what
# they generate: a machine with labd and the broker (its controller on,
# with trusted keys and a name), a broker without its controller beside
# services.lab-controller for an external broker, and a controller with two
# broker URLs. Used by integration/nixos_test.go:
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
      hooks = {
        preActivate = [ { command = [ "/run/current-system/sw/bin/systemctl" "is-system-running" ]; timeout = "2m"; } ];
        postActivate = [ { command = [ "/bin/sh" "-c" "curl -fsS http://127.0.0.1:8080/warm > /dev/null" ]; } ];
        postRollback = [ { command = [ "logger" "-t" "lab" "rolled back" ]; timeout = "10s"; } ];
      };
      secrets = {
        db-password = { path = "/run/lab-secrets/db-password"; owner = "postgres"; mode = "0400"; restartUnits = [ "postgresql.service" ]; };
        wifi = { };
      };
    };
    services.labd = {
      enable = true;
      package = fakeLab;
      broker = [ "tls://lab.example.net:8883" ];
      passwordFile = "/run/secrets/labd-mqtt-password";
      tls.caFile = "/etc/lab/ca.crt";
      trustedKeys = [ operatorKey ];
      controllerKeys = [ "controller-2026:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" ];
      timeouts.fetch = "45m";
      metrics.textfileDir = "/var/lib/prometheus-node-exporter/textfile";
      checkInterval = "15m";
      sshHostKeys = "/persist/etc/ssh/ssh_host_*_key.pub";
    };
    services.lab-broker = {
      enable = true; package = fakeLab; port = 8883; openFirewall = true; jsonMirror = false;
      controller.trustedKeys = [ operatorKey rotatedKey ];
      controller.name = "nas-ctl";
      limits = { connectTimeout = "5s"; maxPendingPerAddress = 16; connectRate = 2.5; loginBanAfter = 8; trustedNetworks = [ ]; };
    };
  };
  # Public keys as labctl key public prints them: id:base64, with + / =.
  operatorKey = "operator-2026:3o0Hq4zY0m8oD2cR9c5m8oYv7jKxk3lJ9mZbZcN0Q1k=";
  rotatedKey = "operator-2027:+/+/AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxw=";
  # A broker without its controller, and a controller beside an external
  # broker (mosquitto, EMQX, ...).
  external = {
    services.lab-broker = { enable = true; package = fakeLab; controller.enable = false; controller.trustedKeys = [ operatorKey ]; };
    services.lab-controller = {
      enable = true;
      package = fakeLab;
      broker = [ "tls://mqtt.example.net:8883" ];
      username = "ctl";
      passwordFile = "/run/secrets/lab-controller-mqtt-password";
      tls = { caFile = "/etc/lab/ca.crt"; certFile = "/run/secrets/ctl.crt"; keyFile = "/run/secrets/ctl.key"; };
      trustedKeys = [ operatorKey rotatedKey ];
    };
  };
  # Two broker URLs: a config file's list (--broker takes one).
  severalBrokers = {
    services.lab-controller = {
      enable = true;
      package = fakeLab;
      broker = [ "tls://a.example.net:8883" "wss://b.example.net/mqtt" ];
      dataDir = "/srv/lab-controller";
      name = "site-b";
      # An argument systemd would split, and expand (% and $): quoted.
      extraArgs = [ "--prefix" "lab 100%/$HOME" ];
    };
  };
  # The window on the fleet (window.nix): the dashboard beyond loopback,
  # webhooks, Home Assistant — on the broker's controller and on
  # services.lab-controller.
  windowed = {
    services.lab-broker = {
      enable = true; package = fakeLab;
      controller.http = { address = ":8380"; tlsCertFile = "/etc/lab/pki/dashboard.crt"; tlsKeyFile = "/run/secrets/dashboard.key"; };
      controller.alerts = {
        offlineAfter = "30m";
        webhooks = [
          { url = "https://ntfy.sh/lab-home"; format = "ntfy"; events = [ "machine-offline" "rollout-halted" ]; }
          { urlFile = "/run/secrets/slack-url"; format = "slack"; secretFile = "/run/secrets/hook"; }
        ];
      };
      controller.homeAssistant.enable = true;
    };
  };
  windowedController = {
    services.lab-controller = {
      enable = true; package = fakeLab; broker = [ "tls://mqtt.example.net:8883" ];
      http = { address = null; };
      alerts.webhooks = [ { url = "https://alerts.example/lab"; secretFile = "/run/secrets/hook"; } ];
      homeAssistant = { enable = true; prefix = "ha"; };
    };
  };
  eval = m: (lib.evalModules { modules = [ nixosStub ../modules/default.nix m ]; }).config;
  c = eval machine;
  e = eval external;
  s = eval severalBrokers;
  labd = c.systemd.services.labd;
  broker = c.systemd.services.lab-broker;
  ctl = e.systemd.services.lab-controller;
  ctl2 = s.systemd.services.lab-controller;
  w = eval windowed;
  wc = eval windowedController;
in {
  windowBrokerExecStart = w.systemd.services.lab-broker.serviceConfig.ExecStart;
  windowBrokerConfig = w.environment.etc."lab-broker/config.json".text;
  windowBrokerRestartTriggers = w.systemd.services.lab-broker.restartTriggers;
  windowControllerExecStart = wc.systemd.services.lab-controller.serviceConfig.ExecStart;
  windowControllerConfig = wc.environment.etc."lab-controller/config.yaml".text;
  windowControllerLoadCredential = wc.systemd.services.lab-controller.serviceConfig.LoadCredential;
  defaultBrokerHasConfig = c.environment.etc ? "lab-broker/config.json";
  labdYaml = c.environment.etc."labd/labd.yaml".text;
  labSecrets = c.environment.etc."lab/secrets.json".text;
  noSecretsEtc = e.environment.etc ? "lab/secrets.json";
  labdExecStart = labd.serviceConfig.ExecStart;
  labdLoadCredential = labd.serviceConfig.LoadCredential;
  labdRestartIfChanged = labd.restartIfChanged;
  labdRestart = labd.serviceConfig.Restart;
  brokerExecStart = broker.serviceConfig.ExecStart;
  firewall = c.networking.firewall.allowedTCPPorts;
  operatorKeys = [ operatorKey rotatedKey ];
  brokerHostHasControllerUnit = c.systemd.services ? lab-controller;
  brokerWithoutControllerExecStart = e.systemd.services.lab-broker.serviceConfig.ExecStart;
  controllerExecStart = ctl.serviceConfig.ExecStart;
  controllerLoadCredential = ctl.serviceConfig.LoadCredential;
  controllerStateDirectory = ctl.serviceConfig.StateDirectory;
  controllerUnit = { inherit (ctl) wantedBy after; inherit (ctl.serviceConfig) Restart ProtectSystem NoNewPrivileges PrivateDevices ReadWritePaths; };
  controllerEtc = builtins.attrNames e.environment.etc;
  severalExecStart = ctl2.serviceConfig.ExecStart;
  severalConfig = s.environment.etc."lab-controller/config.yaml".text;
  severalStateDirectory = ctl2.serviceConfig.StateDirectory or null;
  severalLoadCredential = ctl2.serviceConfig.LoadCredential;
}
