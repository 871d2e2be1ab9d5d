# services.lab-broker: the embedded MQTT broker (labctl broker) on the host
# every machine connects to.
{ config, lib, ... }:
let
  inherit (lib) mkOption mkIf types;
  cfg = config.services.lab-broker;
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
      description = "More labctl broker arguments.";
    };
  };

  config = mkIf cfg.enable {
    networking.firewall.allowedTCPPorts = lib.optional cfg.openFirewall cfg.port;
    systemd.services.lab-broker = {
      description = "lab MQTT broker";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      serviceConfig = {
        ExecStart = lib.concatStringsSep " " ([
          "${cfg.package}/bin/labctl" "broker"
          "--listen" "${cfg.address}:${toString cfg.port}"
          "--data-dir" cfg.dataDir
        ] ++ lib.optionals (cfg.identities != null) [ "--identities" cfg.identities ]
          ++ lib.optional (!cfg.jsonMirror) "--json-mirror=false" ++ cfg.extraArgs);
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
