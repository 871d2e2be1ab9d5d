package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/cast"
	"github.com/spf13/cobra"

	"github.com/lab-fleet/lab/internal/alert"
)

// Viper keys of the controller's alerts (config file, LAB_CONTROLLER_ALERTS_* env).
const (
	keyAlertWebhooks     = "controller.alerts.webhooks"      // list of {url, format, secret_file, events}
	keyAlertHooks        = "controller.alerts.webhook"       // --webhook: [FORMAT=]URL, repeatable
	keyAlertSecretFile   = "controller.alerts.secret_file"   // --webhook-secret-file: signs the --webhook ones
	keyAlertOfflineAfter = "controller.alerts.offline_after" // --alert-offline-after
)

func alertKeys() []string {
	return []string{keyAlertWebhooks, keyAlertHooks, keyAlertSecretFile, keyAlertOfflineAfter}
}

func addAlertFlags(g *globals, cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArray("webhook", nil, "post alerts to `[FORMAT=]URL` (repeatable; FORMAT generic, ntfy or slack; default generic): rollouts finished or halted, machines rolled back, offline, failing checks (docs/alerts.md; per-hook events in the config file's controller.alerts.webhooks)")
	f.String("webhook-secret-file", "", "sign the --webhook deliveries with the secret in `FILE` (X-Lab-Signature, HMAC-SHA256)")
	f.Duration("alert-offline-after", alert.DefaultOfflineAfter, "announce a machine offline for longer than `DURATION`")
}

func bindAlertFlags(g *globals, cmd *cobra.Command) {
	mustBind(g.v, keyAlertHooks, cmd, "webhook")
	mustBind(g.v, keyAlertSecretFile, cmd, "webhook-secret-file")
	mustBind(g.v, keyAlertOfflineAfter, cmd, "alert-offline-after")
}

// webhookEntry is one item of controller.alerts.webhooks.
type webhookEntry struct {
	URL        string   `mapstructure:"url"`
	URLFile    string   `mapstructure:"url_file"` // the URL in a file: Slack's and Matrix' URLs are secrets
	Format     string   `mapstructure:"format"`
	SecretFile string   `mapstructure:"secret_file"`
	Events     []string `mapstructure:"events"`
}

// alertSettings reads and checks the alert keys: every webhook, its
// secret read from its file.
func alertSettings(g *globals) ([]alert.Webhook, time.Duration, error) {
	v := g.v
	var errs []error
	bad := func(key string, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s", source(v, key), key, fmt.Sprintf(format, a...)))
	}
	secret := func(key, file string) []byte {
		if file == "" {
			return nil
		}
		b, err := os.ReadFile(file)
		if err != nil {
			bad(key, "%v", err)
			return nil
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			return []byte(s)
		}
		bad(key, "%s is empty", file)
		return nil
	}
	var hooks []alert.Webhook
	flagSecret := secret(keyAlertSecretFile, v.GetString(keyAlertSecretFile))
	var specs []string
	var err error
	if raw := v.Get(keyAlertHooks); raw != nil {
		specs, err = cast.ToStringSliceE(raw)
	}
	if err != nil {
		bad(keyAlertHooks, "want a list of [FORMAT=]URL: %v", err)
	}
	for _, s := range specs {
		w := alert.Webhook{URL: s, Secret: flagSecret}
		if f, u, ok := strings.Cut(s, "="); ok && !strings.Contains(f, ":") {
			w.URL = u
			if w.Format, err = alert.ParseFormat(f); err != nil {
				bad(keyAlertHooks, "%v", err)
				continue
			}
		}
		if w.Format == "" {
			w.Format = alert.Generic
		}
		if err := w.Check(); err != nil {
			bad(keyAlertHooks, "%v", err)
			continue
		}
		hooks = append(hooks, w)
	}
	if raw := v.Get(keyAlertWebhooks); raw != nil {
		var entries []webhookEntry
		dec, _ := mapstructure.NewDecoder(&mapstructure.DecoderConfig{Result: &entries, ErrorUnused: true, WeaklyTypedInput: false})
		if err := dec.Decode(raw); err != nil {
			bad(keyAlertWebhooks, "want a list of {url or url_file, format, secret_file, events}: %v", err)
		}
		for i, e := range entries {
			key := fmt.Sprintf("%s[%d]", keyAlertWebhooks, i)
			w := alert.Webhook{URL: e.URL, Secret: secret(key+".secret_file", e.SecretFile)}
			switch {
			case e.URL != "" && e.URLFile != "":
				bad(key, "url and url_file exclude each other")
				continue
			case e.URLFile != "":
				u := secret(key+".url_file", e.URLFile)
				if u == nil {
					continue
				}
				w.URL = string(u)
			}
			var err error
			if w.Format, err = alert.ParseFormat(e.Format); err != nil {
				bad(key+".format", "%v", err)
				continue
			}
			for _, name := range e.Events {
				k, err := alert.ParseKind(name)
				if err != nil {
					bad(key+".events", "%v", err)
					continue
				}
				w.Events = append(w.Events, k)
			}
			if err := w.Check(); err != nil {
				bad(key+".url", "%v", err)
				continue
			}
			hooks = append(hooks, w)
		}
	}
	after := alert.DefaultOfflineAfter
	if raw := v.Get(keyAlertOfflineAfter); raw != nil {
		after, err = cast.ToDurationE(raw)
	}
	if err != nil || after <= 0 {
		bad(keyAlertOfflineAfter, "want a positive duration such as 10m, got %v", v.Get(keyAlertOfflineAfter))
	}
	return hooks, after, errors.Join(errs...)
}

func checkAlerts(g *globals) error {
	_, _, err := alertSettings(g)
	return err
}

func startAlerts(ctx context.Context, g *globals, env sidecarEnv) error {
	hooks, after, err := alertSettings(g)
	if err != nil {
		return usageError{err}
	}
	if len(hooks) == 0 {
		return nil
	}
	n, err := alert.New(alert.Config{Fleet: env.fleet, Webhooks: hooks, OfflineAfter: after, Logger: g.logger})
	if err != nil {
		return usageError{err}
	}
	names := make([]string, len(hooks))
	for i, h := range hooks {
		names[i] = string(h.Format) + " " + h.String()
	}
	g.logger.Info("alerts", "webhooks", strings.Join(names, ", "), "offline_after", after)
	if env.reg != nil {
		env.reg.MustRegister(n)
	}
	go n.Run(ctx)
	return nil
}
