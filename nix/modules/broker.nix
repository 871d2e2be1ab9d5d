# services.lab-broker: the embedded MQTT broker (labctl broker) on the host
# every machine connects to, with the controller service inside it (on by
# default; services.lab-controller is the same service beside an external
# broker).
{ config, lib, ... }:
let
  inherit (lib) mkOption mkIf types;
  cfg = config.services.lab-broker;
  # One ExecStart argument, quoted for systemd when it needs it. systemd
  # splits ExecStart on whitespace, expands %-specifiers and $VARIABLES, and
  # reads "..." with C escapes (what builtins.toJSON writes), so the quoted
  # form doubles % and $ (as nixpkgs' utils.escapeSystemdExecArg does).
  # lib.escapeShellArg is for sh, not systemd: it leaves % bare. Public keys
  # (id:base64, with + / =), URLs and paths need no quotes and get none.
  arg = s:
    if builtins.match "[A-Za-z0-9_@+=:,./-]+" s != null then s
    else lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON s);
  ctl = cfg.controller;
in {
  options.services.lab-broker = {
    enable = lib.mkEnableOption "the lab MQTT broker (labctl broker)";
    package = mkOption {
      type = types.package;
      description = "The lab package providing bin/labctl.";
    };
    address = mkOption {
      type = types.str;
      default = "0.0.0.0";
      description = "Address to listen on.";
    };
    port = mkOption {
      type = types.port;
      default = 1883;
      description = "TCP port of the MQTT listener.";
    };
    dataDir = mkOption {
      type = types.str;
      default = "/var/lib/lab-broker";
      description = "Retained messages and sessions survive restarts here.";
    };
    identities = mkOption {
      type = types.nullOr types.str;
      default = "/var/lib/lab-broker/identities.yaml";
      description = "Identities file (labctl node add --identities). null lets every client do everything: only for a lab on a trusted network.";
    };
    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the MQTT port in the firewall.";
    };
    jsonMirror = mkOption {
      type = types.bool;
      default = true;
      description = "Publish JSON copies of node status, presence, events and rollout state under lab/v1/json/ for generic MQTT clients (Home Assistant, Node-RED). Costs the broker CPU and memory in large fleets.";
    };
    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--log-level" "debug" ];
      description = "More labctl broker arguments, one argument per element (each is quoted for systemd as needed).";
    };
    controller = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Run the controller service inside the broker (labctl broker
          --controller, on by default): it drives the rollouts that
          labctl publish submits (waves, gates, deadlines, halts), so a
          rollout goes on while the operator's laptop sleeps. It keeps its
          rollouts (rollouts.db) and its own signing key (controller.key,
          created on first start) in `''${dataDir}/controller`
          (/var/lib/lab-broker/controller by default; the directory is
          not an option of its own). Its key signs gates and commands
          only: print it with
          `labctl controller key --controller-dir /var/lib/lab-broker/controller`
          and put it in every machine's services.labd.controllerKeys.
          false (--controller=false): a broker alone; run
          services.lab-controller somewhere, or let labctl publish
          --local-controller drive rollouts from the laptop.
        '';
      };
      trustedKeys = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "operator-2026:3o0Hq4zY0m8oD2cR9c5m8oYv7jKxk3lJ9mZbZcN0Q1k=" ];
        description = ''
          Operator public keys (as labctl key public prints them,
          id:base64), one --trust-key each: the controller accepts a
          submitted rollout only when all of its desired states are
          signed by one of them. Several for rotation. Empty: it accepts
          any rollout (the broker warns at start) and only each labd's
          trustedKeys decide what runs; pin the operator keys here.
        '';
      };
      name = mkOption {
        type = types.strMatching "[a-z0-9-]{1,63}";
        default = "controller";
        description = "The controller's name in what it publishes (--controller-name). A replacement host must use the same name to take over its rollouts.";
      };
    };
  };

  config = mkIf cfg.enable {
    networking.firewall.allowedTCPPorts = lib.optional cfg.openFirewall cfg.port;
    systemd.services.lab-broker = {
      description = "lab MQTT broker";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      serviceConfig = {
        ExecStart = lib.concatMapStringsSep " " arg ([
          "${cfg.package}/bin/labctl" "broker"
          "--listen" "${cfg.address}:${toString cfg.port}"
          "--data-dir" cfg.dataDir
        ] ++ lib.optionals (cfg.identities != null) [ "--identities" cfg.identities ]
          ++ lib.optional (!cfg.jsonMirror) "--json-mirror=false"
          ++ (if ctl.enable then
                lib.concatMap (k: [ "--trust-key" k ]) ctl.trustedKeys
                ++ lib.optionals (ctl.name != "controller") [ "--controller-name" ctl.name ]
              else [ "--controller=false" ])
          ++ cfg.extraArgs);
        ExecReload = "/run/current-system/sw/bin/kill -HUP $MAINPID";
        Restart = "always";
        StateDirectory = "lab-broker";
        StateDirectoryMode = "0700";
        DynamicUser = false;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        NoNewPrivileges = true;
        ReadWritePaths = [ cfg.dataDir ];
      };
    };
  };
}
