# lab.machine: what lab needs to know about this machine to roll it out.
# labctl reads these options for every machine of the flake in ONE
# `nix eval` (labctl inventory, labctl publish --flake); services.labd turns
# them into labd's configuration.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  duration = types.strMatching "[0-9]+(ms|s|m|h)([0-9]+(ms|s|m))*";
  id = types.strMatching "[a-z0-9][a-z0-9-]{0,62}";
  check = types.submodule {
    options = {
      type = mkOption {
        type = types.enum [ "http" "tcp" "command" "systemd" ];
        description = "What the check does: an HTTP GET, a TCP connect, a command (argv, no shell), or a systemd unit being active.";
      };
      url = mkOption { type = types.nullOr types.str; default = null; example = "http://127.0.0.1:8080/healthz"; description = "http: the URL to GET."; };
      expectStatus = mkOption { type = types.nullOr types.int; default = null; example = 204; description = "http: the expected status (default 200)."; };
      address = mkOption { type = types.nullOr types.str; default = null; example = "127.0.0.1:5432"; description = "tcp: host:port to connect to."; };
      command = mkOption { type = types.nullOr (types.listOf types.str); default = null; example = [ "/run/current-system/sw/bin/pg_isready" "-q" ]; description = "command: argv, run without a shell; healthy on exit 0."; };
      unit = mkOption { type = types.nullOr types.str; default = null; example = "nginx.service"; description = "systemd: the unit that must be active; null means no unit may have failed."; };
      timeout = mkOption { type = types.nullOr duration; default = null; example = "5s"; description = "Bound on one attempt (default 10s)."; };
      interval = mkOption { type = types.nullOr duration; default = null; example = "2s"; description = "Pause between attempts (default 2s)."; };
      retries = mkOption { type = types.nullOr types.int; default = null; example = 5; description = "Attempts after the first failure (default 2; -1 for none)."; };
      grace = mkOption { type = types.nullOr duration; default = null; example = "10s"; description = "Wait after the activation before the first attempt."; };
    };
  };
  hook = types.submodule {
    options = {
      command = mkOption {
        type = types.nonEmptyListOf types.str;
        example = [ "/run/current-system/sw/bin/systemctl" "is-system-running" ];
        description = "argv, run directly: no shell (write [ \"\${pkgs.bash}/bin/sh\" \"-c\" \"...\" ] for one). Its environment is PATH, LAB_HOOK, LAB_ROLLOUT, LAB_GEN, LAB_TOPLEVEL, LAB_PREVIOUS and LAB_ACTION.";
      };
      timeout = mkOption { type = types.nullOr duration; default = null; example = "2m"; description = "The hook is killed (its whole process group) after this long, and counts as failed (labd default 5m)."; };
    };
  };
  # A secret the system expects (docs/secrets.md, "Rollouts that need
  # secrets"): delivered by labctl secret set, never part of the system.
  secret = types.submodule {
    options = {
      path = mkOption { type = types.nullOr types.str; default = null; example = "/run/lab-secrets/db-password"; description = "Where the system expects the file (under labd's secrets.dir). labd waits until the secret is in place there; null: wherever labctl secret set put it (default <secrets.dir>/<name>)."; };
      owner = mkOption { type = types.nullOr types.str; default = null; example = "postgres"; description = "The file's owner (labctl secret set --owner): a rollout waits until the secret was set with this owner."; };
      group = mkOption { type = types.nullOr types.str; default = null; example = "postgres"; description = "The file's group (labctl secret set --group): a rollout waits until the secret was set with it."; };
      mode = mkOption { type = types.nullOr (types.strMatching "0?[0-7]{3}"); default = null; example = "0440"; description = "The file's mode (labctl secret set --mode; labd's default 0400): a rollout waits until the secret has it."; };
      restartUnits = mkOption { type = types.listOf types.str; default = [ ]; example = [ "postgresql.service" ]; description = "Units to restart when the secret changes, for labctl secret set --restart (not checked: labd restarts what the secret names)."; };
    };
  };
  # What the system says it needs, in the system itself: labd reads
  # <toplevel>/etc/lab/secrets.json of the NEW system before activating it.
  declaredSecrets = lib.mapAttrs (_: s: lib.filterAttrs (_: v: v != null && v != [ ]) {
    inherit (s) path owner group mode;
    restart_units = s.restartUnits;
  }) config.lab.machine.secrets;
  hooks = when: mkOption {
    type = types.listOf hook;
    default = [ ];
    description = "Commands labd runs, in order, ${when}";
  };
in {
  options.lab.machine = {
    role = mkOption {
      type = types.nullOr id;
      default = null;
      example = "web";
      description = "Free-form role, shown by labctl inventory and status.";
    };
    groups = mkOption {
      type = types.listOf id;
      default = [ ];
      example = [ "servers" "eu" ];
      description = "Groups this machine belongs to: labctl publish --on @group selects them, and the machine follows the gates of these groups. Give the node the same groups in the broker's identities (labctl node add --groups).";
    };
    rebootOrder = mkOption {
      type = types.int;
      default = 0;
      example = 10;
      description = "Rollouts and reboots handle lower numbers first.";
    };
    dependencies = mkOption {
      type = types.listOf id;
      default = [ ];
      example = [ "nas" ];
      description = "Machines that must be rolled out successfully before this one (its wave comes after theirs). A cycle is refused before anything is published.";
    };
    healthChecks = mkOption {
      type = types.attrsOf check;
      default = { };
      example = lib.literalExpression ''
        {
          web = { type = "http"; url = "http://127.0.0.1/"; retries = 5; interval = "3s"; };
          db = { type = "tcp"; address = "127.0.0.1:5432"; };
        }
      '';
      description = "Local health checks labd runs after every activation (and after a reboot); when one fails, the machine rolls back by itself. Commands from the network never define what runs: they only name these checks.";
    };
    secrets = mkOption {
      type = types.attrsOf secret;
      default = { };
      example = lib.literalExpression ''
        { db-password = { path = "/run/lab-secrets/db-password"; owner = "postgres"; mode = "0400"; restartUnits = [ "postgresql.service" ]; }; }
      '';
      description = "Secrets this system needs (names as in labctl secret set NODE NAME). They are written into the system as /etc/lab/secrets.json (names and metadata, never content); a rollout of it waits on the machine, before activating, until each is in place with the path, owner, group and mode given here (those given), at most the fetch timeout, and then times out naming the one that never arrived.";
    };
    # Deploy hooks (docs/labd.md, "Deploy hooks"): from this configuration
    # only, never from the network.
    hooks = {
      preActivate = hooks "after the new system was fetched and before the profile moves. The first that fails (non-zero exit, timeout) stops the rollout on this machine: failed, nothing was changed, the hook's output in the event.";
      postActivate = hooks "after switch-to-configuration succeeded (for action boot: after the reboot into the new system), before the health checks. One that fails counts as a failed health check: the machine rolls back.";
      preRollback = hooks "before the profile goes back to the previous system. Every one runs; a failure is reported in the event, never stops the rollback.";
      postRollback = hooks "after the rollback activation, whether it succeeded or not. Every one runs; a failure is reported in the event.";
    };
    orchestration = {
      deployStrategy = mkOption {
        type = types.enum [ "switch" "boot" "test" ];
        default = "switch";
        description = "How new systems are activated on this machine by default (switch-to-configuration action).";
      };
      rebootDelay = mkOption {
        type = duration;
        default = "0s";
        example = "2m";
        description = "How long labctl reboot waits after this machine came back healthy before the next one.";
      };
      criticalityLevel = mkOption {
        type = types.enum [ "low" "normal" "high" "critical" ];
        default = "normal";
        description = "How much this machine matters; shown in status.";
      };
    };
  };
  config = lib.mkIf (config.lab.machine.secrets != { }) {
    environment.etc."lab/secrets.json".text = builtins.toJSON declaredSecrets;
  };
}
