# services.labd: lab's node daemon, configured from these options and from
# lab.machine (its groups, reboot order, dependencies, health checks and
# deploy hooks).
{ config, lib, ... }:
let
  inherit (lib) mkOption mkIf types;
  cfg = config.services.labd;
  m = config.lab.machine;
  credential = "mqtt-password";
  nonNull = lib.filterAttrs (_: v: v != null);
  # labd's config (docs/labd.md). JSON is YAML.
  settings = nonNull {
    name = cfg.name;
    groups = m.groups;
    broker = cfg.broker;
    password_file = if cfg.passwordFile == null then null else "/run/credentials/labd.service/${credential}";
    tls = if cfg.tls.certFile == null && cfg.tls.caFile == null then null else nonNull {
      ca = if cfg.tls.caFile == null then null else "/run/credentials/labd.service/tls-ca";
      cert = if cfg.tls.certFile == null then null else "/run/credentials/labd.service/tls-cert";
      key = if cfg.tls.keyFile == null then null else "/run/credentials/labd.service/tls-key";
    };
    state_dir = cfg.stateDir;
    trusted_keys = cfg.trustedKeys;
    controller_keys = cfg.controllerKeys;
    labd_path = "${cfg.package}/bin/labd";
    timeouts = nonNull { inherit (cfg.timeouts) fetch activate confirm; };
    check_interval = cfg.checkInterval;
    ssh_host_keys = cfg.sshHostKeys;
    metrics = if cfg.metrics.textfileDir == null then null else nonNull {
      textfile_dir = cfg.metrics.textfileDir;
      textfile_interval = cfg.metrics.textfileInterval;
    };
    machine = nonNull {
      role = m.role;
      reboot_order = m.rebootOrder;
      dependencies = m.dependencies;
      reboot_delay = m.orchestration.rebootDelay;
      criticality = m.orchestration.criticalityLevel;
    };
    hooks = let
      phases = lib.filterAttrs (_: l: l != [ ]) {
        pre_activate = m.hooks.preActivate;
        post_activate = m.hooks.postActivate;
        pre_rollback = m.hooks.preRollback;
        post_rollback = m.hooks.postRollback;
      };
    in if phases == { } then null else lib.mapAttrs (_: map (h: nonNull { inherit (h) command timeout; })) phases;
    checks = lib.mapAttrsToList (name: c: nonNull {
      inherit name;
      inherit (c) type url address command unit timeout interval retries grace;
      expect_status = c.expectStatus;
    }) m.healthChecks;
  } // cfg.extraConfig;
in {
  imports = [ ./machine.nix ];

  options.services.labd = {
    enable = lib.mkEnableOption "labd, lab's node daemon (NixOS rollouts over MQTT)";
    package = mkOption {
      type = types.package;
      description = "The lab package providing bin/labd.";
    };
    name = mkOption {
      type = types.strMatching "[a-z0-9][a-z0-9-]{0,62}";
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "Node name: its MQTT client id and username, and its name in rollouts.";
    };
    broker = mkOption {
      type = types.listOf types.str;
      example = [ "tls://lab.example.net:8883" ];
      description = "Broker URLs (mqtt://, tls://, ws://, wss://). labd holds one outbound connection: NAT is fine.";
    };
    passwordFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/labd-mqtt-password";
      description = "File with this node's broker password (labctl node add writes it). Given to the service with systemd's LoadCredential, never put in the Nix store.";
    };
    tls = {
      caFile = mkOption { type = types.nullOr types.path; default = null; example = "/etc/lab/ca.crt"; description = "CA that signed the broker's certificate (labctl pki init), for tls:// and wss:// brokers; null: the system's roots."; };
      certFile = mkOption { type = types.nullOr types.path; default = null; example = "/run/secrets/labd.crt"; description = "Client certificate whose common name is the node's name (labctl pki issue NAME): the broker then needs no password."; };
      keyFile = mkOption { type = types.nullOr types.path; default = null; example = "/run/secrets/labd.key"; description = "The client certificate's private key (given to the service with LoadCredential)."; };
    };
    trustedKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "operator-2026:3o0Hq4zY0m8oD2cR9c5m8oYv7jKxk3lJ9mZbZcN0Q1k=" ];
      description = "Operator public keys (labctl key public) whose signatures the node accepts on desired states (what it runs), gates and commands; several for rotation. With controllerKeys also empty the node accepts unsigned messages: do not leave it empty.";
    };
    controllerKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "controller-2026:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" ];
      description = "Controller public keys whose signatures the node accepts on gates and commands only (when, reboots, cancels), never on desired states; several for rotation. trustedKeys are accepted for gates and commands as well, so this need not repeat them.";
    };
    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/labd";
      description = "Where labd keeps its execution state.";
    };
    timeouts = {
      fetch = mkOption { type = types.nullOr types.str; default = null; example = "45m"; description = "Bound on realising a new system's closure (labd default 30m)."; };
      activate = mkOption { type = types.nullOr types.str; default = null; example = "15m"; description = "Bound on switch-to-configuration (labd default 10m)."; };
      confirm = mkOption { type = types.nullOr types.str; default = null; example = "5m"; description = "Bound on reconnecting and passing the checks after activation (labd default 5m)."; };
    };
    metrics = {
      textfileDir = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/prometheus-node-exporter/textfile";
        description = "node_exporter's textfile directory (its --collector.textfile.directory): labd writes its metrics to labd.prom in it (docs/labd.md, \"Metrics for node_exporter\"). null: no file.";
      };
      textfileInterval = mkOption { type = types.nullOr types.str; default = null; example = "1m"; description = "How often labd.prom is rewritten when nothing changes (labd default 30s)."; };
    };
    sshHostKeys = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/persist/etc/ssh/ssh_host_*_key.pub";
      description = "Glob of the SSH host public keys labd reports (ssh_host_keys; labd default /etc/ssh/ssh_host_*_key.pub, as services.openssh writes them; \"off\": none), for labctl inventory --known-hosts.";
    };
    checkInterval = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "15m";
      description = "How often the health checks (lab.machine.healthChecks) run between rollouts, their results published (check_interval; labd default 5m; \"off\": only in rollouts and after a reboot).";
    };
    extraConfig = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      example = { log_level = "debug"; };
      description = "More labd configuration keys (docs/labd.md), merged last.";
    };
  };

  config = mkIf cfg.enable {
    environment.etc."labd/labd.yaml".text = builtins.toJSON settings;

    systemd.services.labd = {
      description = "lab node daemon";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # The unit must survive its own activation: switch-to-configuration
      # runs from labd (detached), and restarting labd in the middle of it
      # would cut the execution off. When the new system runs another labd,
      # labd notices after the execution ended (labd_path in its config
      # changed) and exits 0; Restart=always brings up the new one.
      restartIfChanged = false;
      stopIfChanged = false;
      restartTriggers = [ ];
      serviceConfig = {
        ExecStart = "${cfg.package}/bin/labd --config /etc/labd/labd.yaml";
        Restart = "always";
        RestartSec = "2s";
        # labd is root because switch-to-configuration must be: it changes
        # the whole system. What can be confined without breaking that:
        StateDirectory = "labd";
        StateDirectoryMode = "0700";
        PrivateTmp = true; # its temporary files are its own
        ProtectHome = "read-only"; # an activation has no business in /home
        ProtectClock = true;
        ProtectHostname = false; # the new system may set the hostname
        # Not set, on purpose: ProtectSystem (the activation writes /etc,
        # /boot and the profile), NoNewPrivileges (activation scripts use
        # setuid wrappers), PrivateDevices (bootloader installs need /dev).
        LoadCredential = lib.optional (cfg.passwordFile != null) "${credential}:${cfg.passwordFile}"
          ++ lib.optional (cfg.tls.caFile != null) "tls-ca:${cfg.tls.caFile}"
          ++ lib.optional (cfg.tls.certFile != null) "tls-cert:${cfg.tls.certFile}"
          ++ lib.optional (cfg.tls.keyFile != null) "tls-key:${cfg.tls.keyFile}";
      };
    };
  };
}
