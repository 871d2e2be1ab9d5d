# services.lab-controller: the controller service (labctl controller) as a
# client of an external MQTT v5 broker (mosquitto, EMQX, HiveMQ, VerneMQ).
# With lab's own broker there is nothing to run: services.lab-broker runs
# the same service inside the broker (services.lab-broker.controller).
{ config, lib, ... }:
let
  inherit (lib) mkOption mkIf types;
  cfg = config.services.lab-controller;
  # Secrets and certificates reach the service with systemd's
  # LoadCredential (as in labd.nix): never through the Nix store, readable
  # by the service whoever owns the files.
  credentialDir = "/run/credentials/lab-controller.service";
  credentials = lib.filter (c: c.file != null) [
    { id = "mqtt-password"; flag = "--password-file"; file = cfg.passwordFile; }
    { id = "tls-ca"; flag = "--tls-ca"; file = cfg.tls.caFile; }
    { id = "tls-cert"; flag = "--tls-cert"; file = cfg.tls.certFile; }
    { id = "tls-key"; flag = "--tls-key"; file = cfg.tls.keyFile; }
    { id = "http-identities"; flag = "--http-identities"; file = cfg.http.identities; }
  ];
  # The dashboard, alerts and Home Assistant (window.nix); their secret
  # files are credentials too.
  window = import ./window.nix { inherit lib; };
  credentialPath = id: _: "${credentialDir}/${id}";
  windowSettings = window.settings cfg credentialPath;
  windowProblems = window.problems cfg;
  # --broker takes one URL; several (tried in turn, as labd does) go in a
  # config file's broker list (docs/labctl.md). JSON is YAML.
  configFile = "/etc/lab-controller/config.yaml";
  severalBrokers = builtins.length cfg.broker > 1;
  settings = lib.optionalAttrs severalBrokers { broker = cfg.broker; }
    // lib.optionalAttrs (windowSettings != null) windowSettings;
  # One ExecStart argument, quoted for systemd when it needs it (see
  # broker.nix): "..." with % and $ doubled; keys, URLs and paths bare.
  arg = s:
    if builtins.match "[A-Za-z0-9_@+=:,./-]+" s != null then s
    else lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON s);
  stateDirectory = lib.removePrefix "/var/lib/" cfg.dataDir;
in {
  options.services.lab-controller = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Run the lab controller service (labctl controller) beside an
        external MQTT v5 broker: mosquitto, EMQX, HiveMQ, VerneMQ. It
        drives the rollouts that labctl publish submits (waves, gates,
        deadlines, halts), so a rollout goes on while the operator's laptop
        sleeps. It connects as an ordinary client, so the broker's
        identities must give its username (or its client certificate's
        common name) the controller role: `labctl node add NAME --role
        controller`, then `labctl acl export` for mosquitto, or the rules of
        docs/security.md for the others. With lab's own broker
        (services.lab-broker) this is not needed: the broker runs the same
        service itself (services.lab-broker.controller).
      '';
    };
    package = mkOption {
      type = types.package;
      description = "The lab package providing bin/labctl.";
    };
    broker = mkOption {
      type = types.nonEmptyListOf types.str;
      example = [ "tls://mqtt.example.net:8883" ];
      description = "Broker URLs (mqtt://, tls://, ws://, wss://), tried in turn. One is passed as --broker; several are written to /etc/lab-controller/config.yaml (its broker list) and passed with --config.";
    };
    username = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "ctl";
      description = "The controller's MQTT username: an identity with the controller role. null: none (a client certificate's common name is then the identity).";
    };
    passwordFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/lab-controller-mqtt-password";
      description = "File with the controller identity's broker password (labctl node add writes NAME.password). Given to the service with systemd's LoadCredential (--password-file /run/credentials/lab-controller.service/mqtt-password), never put in the Nix store.";
    };
    tls = {
      caFile = mkOption { type = types.nullOr types.str; default = null; example = "/etc/lab/ca.crt"; description = "CA that signed the broker's certificate, for tls:// and wss:// brokers (--tls-ca, given with LoadCredential); null: the system's roots."; };
      certFile = mkOption { type = types.nullOr types.str; default = null; example = "/run/secrets/lab-controller.crt"; description = "Client certificate whose common name is the controller identity: the broker then needs no password (--tls-cert, given with LoadCredential)."; };
      keyFile = mkOption { type = types.nullOr types.str; default = null; example = "/run/secrets/lab-controller.key"; description = "The client certificate's private key (--tls-key, given with LoadCredential)."; };
    };
    trustedKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "operator-2026:3o0Hq4zY0m8oD2cR9c5m8oYv7jKxk3lJ9mZbZcN0Q1k=" ];
      description = ''
        Operator public keys (as labctl key public prints them, id:base64),
        one --trust-key each: the controller accepts a submitted rollout
        only when all of its desired states are signed by one of them.
        Several for rotation. Empty: it accepts any rollout (it warns at
        start) and only each labd's trustedKeys decide what runs; pin the
        operator keys here.
      '';
    };
    name = mkOption {
      type = types.strMatching "[a-z0-9-]{1,63}";
      default = "controller";
      description = "The controller's name in what it publishes (--controller-name, passed when not the default). A replacement host must use the same name to take over its rollouts.";
    };
    dataDir = mkOption {
      type = types.str;
      default = "/var/lib/lab-controller";
      description = ''
        The controller's rollouts (rollouts.db) and its own signing key
        (controller.key, created on first start) (--controller-dir). Under
        /var/lib it is the unit's StateDirectory (created, mode 0700);
        elsewhere it must exist. Print the key with
        `labctl controller key --controller-dir DIR` and put it in every
        machine's services.labd.controllerKeys; back the directory up.
      '';
    };
    logLevel = mkOption {
      type = types.enum [ "debug" "info" "warn" "error" ];
      default = "info";
      description = "labctl's --log-level.";
    };
    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--prefix" "lab/v1" ];
      description = "More labctl controller arguments, one argument per element (each is quoted for systemd as needed).";
    };
  } // lib.recursiveUpdate window.options {
    http.identities = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/lab-broker/identities.yaml";
      description = "The broker's identities file, whose viewers and controllers may log in to the dashboard (--http-identities, given with LoadCredential); needed beyond loopback.";
    };
  };

  config = mkIf cfg.enable {
    environment.etc = lib.optionalAttrs (settings != { }) {
      "lab-controller/config.yaml".text = builtins.toJSON settings;
    };

    systemd.services.lab-controller = {
      description = "lab controller service";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      restartTriggers = lib.optional (settings != { }) (builtins.toJSON settings);
      serviceConfig = {
        ExecStart = lib.concatMapStringsSep " " arg ([
          "${cfg.package}/bin/labctl" "controller"
          "--log-level" cfg.logLevel
        ] ++ lib.optionals (settings != { }) [ "--config" configFile ]
          ++ lib.optionals (!severalBrokers) [ "--broker" (builtins.head cfg.broker) ]
          ++ lib.optionals (cfg.username != null) [ "--username" cfg.username ]
          ++ lib.concatMap (c: [ c.flag "${credentialDir}/${c.id}" ]) credentials
          ++ [ "--controller-dir" cfg.dataDir ]
          ++ lib.concatMap (k: [ "--trust-key" k ]) cfg.trustedKeys
          ++ lib.optionals (cfg.name != "controller") [ "--controller-name" cfg.name ]
          ++ (if windowProblems != [ ] then throw "services.lab-controller: ${lib.concatStringsSep "; " windowProblems}"
              else window.args cfg credentialPath)
          ++ cfg.extraArgs);
        LoadCredential = map (c: "${c.id}:${c.file}") (credentials ++ window.secrets cfg);
        Restart = "always";
        RestartSec = "5s";
        # The same confinement as lab-broker: it only talks MQTT and
        # writes its data directory.
        DynamicUser = false;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        NoNewPrivileges = true;
        ReadWritePaths = [ cfg.dataDir ];
      } // lib.optionalAttrs (lib.hasPrefix "/var/lib/" cfg.dataDir) {
        StateDirectory = stateDirectory;
        StateDirectoryMode = "0700";
      };
    };
  };
}
