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
  window = import ./window.nix { inherit lib; };
  # The broker runs as root: it reads secret files where they are.
  asIs = _: path: path;
  windowSettings = window.settings ctl asIs;
  configFile = "/etc/lab-broker/config.json";
  windowProblems = window.problems ctl;
  lim = cfg.limits;
  limitFlags = {
    connectTimeout = "--connect-timeout"; maxPending = "--max-pending";
    maxPendingPerAddress = "--max-pending-per-address"; connectRate = "--connect-rate";
    connectBurst = "--connect-burst"; loginSlowAfter = "--login-slow-after";
    loginBanAfter = "--login-ban-after"; loginWindow = "--login-window";
    loginBanDuration = "--login-ban-duration";
  };
  limitArgs = lib.concatLists (lib.mapAttrsToList
    (name: flag: lib.optionals (lim.${name} != null) [ flag (toString lim.${name}) ]) limitFlags)
    ++ lib.optionals (lim.trustedNetworks != null)
      [ "--trusted-networks" (if lim.trustedNetworks == [ ] then "none" else lib.concatStringsSep "," lim.trustedNetworks) ];
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
    limits = let
      opt = type: flag: default: description: mkOption {
        type = types.nullOr type;
        default = null;
        description = "${description} (${flag}; null: labctl's default, ${default}).";
      };
    in {
      connectTimeout = opt types.str "--connect-timeout" "10s" "Close a connection that has not completed its TLS handshake and CONNECT within this duration";
      maxPending = opt types.ints.positive "--max-pending" "1000" "Connections waiting to log in, from all untrusted addresses together; more are closed at accept";
      maxPendingPerAddress = opt types.ints.positive "--max-pending-per-address" "64" "Connections waiting to log in from one address (an IPv6 /64)";
      connectRate = opt (types.either types.ints.positive types.float) "--connect-rate" "10" "New connections a second from one address, on average";
      connectBurst = opt types.ints.positive "--connect-burst" "100" "New connections from one address at once, before connectRate applies";
      loginSlowAfter = opt types.ints.positive "--login-slow-after" "5" "Failed logins from one address after which each refusal is held back (250 ms doubling to 10 s)";
      loginBanAfter = opt types.ints.positive "--login-ban-after" "20" "Failed logins within loginWindow after which that username from that address, a person's (bcrypt) username from anywhere, and an address guessing 3 or more usernames with no good login are refused for loginBanDuration";
      loginWindow = opt types.str "--login-window" "10m" "The window failed logins are counted over";
      loginBanDuration = opt types.str "--login-ban-duration" "10m" "How long a ban lasts";
      trustedNetworks = mkOption {
        type = types.nullOr (types.listOf types.str);
        default = null;
        example = [ "127.0.0.0/8" "::1/128" "192.168.1.0/24" ];
        description = ''
          Addresses or networks exempt from the limits above (the connect
          timeout still applies); --trusted-networks. null: loopback only
          (labctl's default); [ ]: nobody, which is right when a proxy or
          tunnel hands the broker its connections from loopback.
        '';
      };
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
    } // window.options;
  };

  config = mkIf cfg.enable {
    networking.firewall.allowedTCPPorts = lib.optional cfg.openFirewall cfg.port;
    # The webhooks are a list: they go in a config file (JSON is YAML).
    environment.etc = lib.optionalAttrs (ctl.enable && windowSettings != null) {
      "lab-broker/config.json".text = builtins.toJSON windowSettings;
    };
    systemd.services.lab-broker = {
      description = "lab MQTT broker";
      restartTriggers = lib.optional (ctl.enable && windowSettings != null) (builtins.toJSON windowSettings);
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      serviceConfig = {
        ExecStart = lib.concatMapStringsSep " " arg ([
          "${cfg.package}/bin/labctl" "broker"
          "--listen" "${cfg.address}:${toString cfg.port}"
          "--data-dir" cfg.dataDir
        ] ++ lib.optionals (cfg.identities != null) [ "--identities" cfg.identities ]
          ++ lib.optional (!cfg.jsonMirror) "--json-mirror=false"
          ++ limitArgs
          ++ (if ctl.enable then
                lib.concatMap (k: [ "--trust-key" k ]) ctl.trustedKeys
                ++ lib.optionals (ctl.name != "controller") [ "--controller-name" ctl.name ]
                ++ (if windowProblems != [ ] then throw "services.lab-broker.controller: ${lib.concatStringsSep "; " windowProblems}"
                    else window.args ctl asIs)
                ++ lib.optionals (windowSettings != null) [ "--config" configFile ]
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
