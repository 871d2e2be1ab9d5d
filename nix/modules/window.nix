# The controller service's window on the fleet — the dashboard and
# /metrics listener, webhook alerts, Home Assistant discovery — as options
# shared by services.lab-broker.controller and services.lab-controller.
# Not a module: broker.nix and controller.nix import it with lib.
{ lib }:
let
  inherit (lib) mkOption types;
  events = [
    "rollout-finished" "rollout-halted" "machine-rolled-back" "machine-rollback-failed"
    "machine-offline" "machine-online" "check-failing" "check-recovered"
  ];
  webhook = types.submodule {
    options = {
      url = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://ntfy.sh/lab-home-7c1e9a";
        description = "Where to POST (http:// or https://). For ntfy the last path element is the topic. Use urlFile when the URL is itself a secret (Slack, Matrix).";
      };
      urlFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/lab-slack-webhook";
        description = "A file holding the URL (read at start; not copied to the Nix store).";
      };
      format = mkOption {
        type = types.enum [ "generic" "ntfy" "slack" ];
        default = "generic";
        description = "generic: lab's event as JSON; ntfy: an ntfy publish; slack: {\"text\": ...} for Slack, Mattermost, Matrix hookshot (docs/alerts.md).";
      };
      secretFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/lab-webhook-secret";
        description = "Sign every delivery with the secret in this file (X-Lab-Signature: HMAC-SHA256 over X-Lab-Timestamp, a dot and the body).";
      };
      events = mkOption {
        type = types.listOf (types.enum events);
        default = [ ];
        example = [ "machine-rollback-failed" "machine-offline" "rollout-halted" ];
        description = "The events this webhook receives; empty: all of them.";
      };
    };
  };
in {
  options = {
    http = {
      address = mkOption {
        type = types.nullOr types.str;
        default = "localhost:8380";
        example = ":8380";
        description = ''
          Serve the web dashboard and Prometheus /metrics here (--http);
          null: not at all. On loopback with plain HTTP it asks no login;
          any other address needs tlsCertFile, tlsKeyFile and the broker's
          identities (viewers see, controllers may pause, resume and
          cancel), else the service refuses to start (docs/dashboard.md).
        '';
      };
      tlsCertFile = mkOption { type = types.nullOr types.str; default = null; example = "/etc/lab/pki/dashboard.crt"; description = "Certificate of the dashboard's HTTPS listener (--http-tls-cert; labctl pki issue makes one)."; };
      tlsKeyFile = mkOption { type = types.nullOr types.str; default = null; example = "/run/secrets/lab-dashboard.key"; description = "Its private key (--http-tls-key)."; };
    };
    alerts = {
      webhooks = mkOption {
        type = types.listOf webhook;
        default = [ ];
        example = lib.literalExpression ''[ { url = "https://ntfy.sh/lab-home-7c1e9a"; format = "ntfy"; events = [ "machine-rollback-failed" "machine-offline" ]; } ]'';
        description = "Webhooks told when a rollout finishes or halts, a machine rolls back or cannot, stays offline, or fails a health check outside a rollout (docs/alerts.md). Delivery is retried with backoff and never holds a rollout up.";
      };
      offlineAfter = mkOption {
        type = types.str;
        default = "10m";
        description = "Announce a machine offline for longer than this (--alert-offline-after).";
      };
    };
    homeAssistant = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = "Announce every machine to Home Assistant by MQTT discovery (--homeassistant): a device with its system as an update entity, its connectivity, its problems and its last switch (docs/homeassistant.md). Give Home Assistant a viewer identity.";
      };
      prefix = mkOption { type = types.str; default = "homeassistant"; description = "Home Assistant's discovery prefix (--homeassistant-prefix)."; };
    };
  };

  # args are the command-line arguments for these options; file maps a
  # secret's path to the path the service reads it at (its credential
  # directory, or the path itself).
  args = w: file:
    (if w.http.address == null then [ "--http" "" ]
     else lib.optionals (w.http.address != "localhost:8380") [ "--http" w.http.address ])
    ++ lib.optionals (w.http.tlsCertFile != null) [ "--http-tls-cert" (file "http-tls-cert" w.http.tlsCertFile) ]
    ++ lib.optionals (w.http.tlsKeyFile != null) [ "--http-tls-key" (file "http-tls-key" w.http.tlsKeyFile) ]
    ++ lib.optionals (w.alerts.offlineAfter != "10m") [ "--alert-offline-after" w.alerts.offlineAfter ]
    ++ lib.optionals w.homeAssistant.enable ([ "--homeassistant" ]
      ++ lib.optionals (w.homeAssistant.prefix != "homeassistant") [ "--homeassistant-prefix" w.homeAssistant.prefix ]);

  # settings is the config file's part for the webhooks (null when there
  # are none): a list of entries does not fit a flag.
  settings = w: file:
    if w.alerts.webhooks == [ ] then null
    else {
      controller.alerts.webhooks = lib.imap0 (i: h:
        lib.filterAttrs (_: v: v != null && v != [ ]) {
          inherit (h) url format events;
          url_file = if h.urlFile == null then null else file "webhook-${toString i}-url" h.urlFile;
          secret_file = if h.secretFile == null then null else file "webhook-${toString i}-secret" h.secretFile;
        }) w.alerts.webhooks;
    };

  # secrets are the files args and settings name, as { id, file } (for
  # LoadCredential).
  secrets = w:
    lib.filter (c: c.file != null) ([
      { id = "http-tls-cert"; file = w.http.tlsCertFile; }
      { id = "http-tls-key"; file = w.http.tlsKeyFile; }
    ] ++ lib.concatLists (lib.imap0 (i: h: [
      { id = "webhook-${toString i}-url"; file = h.urlFile; }
      { id = "webhook-${toString i}-secret"; file = h.secretFile; }
    ]) w.alerts.webhooks));

  # checks are the assertions a webhook needs: exactly one of url, urlFile.
  problems = w: lib.concatLists (lib.imap0 (i: h:
    lib.optional ((h.url == null) == (h.urlFile == null))
      "alerts.webhooks.${toString i}: set exactly one of url and urlFile") w.alerts.webhooks);
}
