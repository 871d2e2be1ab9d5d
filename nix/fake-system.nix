# A fake "NixOS system" toplevel for the demo and the tests: no nixpkgs, the
# builder is the host's /bin/sh. Its bin/switch-to-configuration behaves like
# the real one as far as lab can see: it takes an action, logs
# "<action> <toplevel>" to $FAKE_NIXOS_LOG, and can fail or be slow.
#
#   nix-build fake-system.nix --argstr name n1 --arg gen 2
#   nix-build fake-system.nix --argstr name n1 --arg gen 3 --arg failSwitch true
#
# failSwitch: switch-to-configuration always exits 1 ("baked failure").
# failHealth: the toplevel contains a `fail-health` marker a health check can test.
# sleepSwitch: switch-to-configuration sleeps that many seconds first.
# onSwitch: a shell snippet the switch runs after recording its action, as a
#   real activation changes the machine (e.g. "ip link set eth0 down": the
#   new configuration breaks the network).
# secrets: an attrset written as the toplevel's etc/lab/secrets.json, as
#   the lab.machine.secrets module writes it (its JSON form: restart_units,
#   e.g. { db-password = { mode = "0400"; }; }): labd
#   waits for them before activating. null (default): no such file, and the
#   derivation is exactly what it was before this argument existed.
#   nix-build fake-system.nix --arg secrets '{ db-password = { }; }'
# At run time, switching fails while the file named by $FAKE_NIXOS_FAIL exists.
{ name ? "node1", gen ? 1, failSwitch ? false, failHealth ? false, sleepSwitch ? 0
, onSwitch ? "", secrets ? null
, system ? builtins.currentSystem }:
let
  switchScript = builtins.toFile "switch-to-configuration" ''
    #!/bin/sh
    # Fake switch-to-configuration: records its action, can be made to fail.
    action="$1"
    self=$(cd "$(dirname "$0")/.." && pwd -P)
    log="''${FAKE_NIXOS_LOG:-/dev/null}"
    case "$action" in switch|boot|test|dry-activate) ;; *) echo "unknown action $action" >&2; exit 2;; esac
    if [ -s "$self/sleep-switch" ]; then sleep "$(cat "$self/sleep-switch")"; fi
    echo "$action $self" >> "$log"
    if [ -s "$self/on-switch" ]; then sh "$self/on-switch" || echo "switch-to-configuration: on-switch failed" >&2; fi
    if [ -e "$self/fail-switch" ]; then echo "switch-to-configuration: baked failure" >&2; exit 1; fi
    if [ -n "$FAKE_NIXOS_FAIL" ] && [ -e "$FAKE_NIXOS_FAIL" ]; then echo "switch-to-configuration: injected failure" >&2; exit 1; fi
    echo "switch-to-configuration: $action done"
    exit 0
  '';
  # Only when given: other tests compare the store paths of the others.
  withSecrets = if secrets == null then { } else { secretsJSON = builtins.toJSON secrets; };
  secretsScript = if secrets == null then "" else ''
    mkdir -p $out/etc/lab
    printf '%s' "$secretsJSON" > $out/etc/lab/secrets.json
  '';
in
derivation ({
  name = "nixos-system-${name}-${toString gen}";
  inherit system switchScript;
  builder = "/bin/sh";
  PATH = "/usr/bin:/bin";
  hostName = name;
  generation = toString gen;
  failSwitch = if failSwitch then "1" else "";
  failHealth = if failHealth then "1" else "";
  sleepSwitch = toString sleepSwitch;
  inherit onSwitch;
  args = [ "-c" (''
    set -e
    mkdir -p $out/bin
    cp $switchScript $out/bin/switch-to-configuration
    chmod 0555 $out/bin/switch-to-configuration
    echo "25.05.$generation-fake" > $out/nixos-version
    echo "$system" > $out/system
    echo "$hostName" > $out/hostname
    if [ -n "$failSwitch" ]; then touch $out/fail-switch; fi
    if [ -n "$failHealth" ]; then touch $out/fail-health; fi
    if [ -n "$onSwitch" ]; then printf '%s\n' "$onSwitch" > $out/on-switch; fi
    if [ "$sleepSwitch" != "0" ]; then echo "$sleepSwitch" > $out/sleep-switch; fi
  '' + secretsScript) ];
} // withSecrets)
