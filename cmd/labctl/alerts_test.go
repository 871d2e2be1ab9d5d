package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/alert"
	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/bustest"
	"github.com/lab-fleet/lab/internal/configkeys"
	"github.com/lab-fleet/lab/proto"
)

func TestAlertSettingsRefuseBadInput(t *testing.T) {
	clearBrokerEnv(t)
	cfg := writeFile(t, "alerts.yaml", `controller:
  alerts:
    offline_after: 5m
    webhooks:
      - url: https://ntfy.example/lab
        format: ntfy
        events: [rollout-finished, machine-offline]
      - url: https://hooks.example/x
        format: teams
      - url: https://hooks.example/y
        events: [rollout-done]
      - url: https://hooks.example/z
        secret: inline
      - url: https://hooks.example/w
        secret_file: /nonexistent/secret
      - url: https://hooks.example/v
        url_file: /nonexistent/url
`)
	code, _, errOut := labctl(t, "broker", "--config", cfg, "--check-config", "--webhook", "slack=ftp://x")
	if code != 2 {
		t.Fatalf("exit %d, want 2\n%s", code, errOut)
	}
	for _, want := range []string{
		`controller.alerts.webhooks[1].format: unknown webhook format "teams"`,
		`controller.alerts.webhooks[2].events: unknown event "rollout-done"`,
		`secret`, // the unknown key of the fourth
		`controller.alerts.webhooks[4].secret_file: open /nonexistent/secret`,
		`controller.alerts.webhooks[5]: url and url_file exclude each other`,
		`controller.alerts.webhook: webhook "ftp://x": want an http:// or https:// URL`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("no %q in:\n%s", want, errOut)
		}
	}
	ok := writeFile(t, "ok.yaml", "controller:\n  alerts:\n    offline_after: 5m\n    webhooks:\n      - url: https://ntfy.example/lab\n        format: ntfy\n        events: [rollout-finished]\n")
	if code, out, errOut := labctl(t, "broker", "--config", ok, "--check-config"); code != 0 {
		t.Errorf("a valid alerts section: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := labctl(t, "broker", "--check-config", "--alert-offline-after", "0s"); code != 2 || !strings.Contains(errOut, "offline_after") {
		t.Errorf("--alert-offline-after 0s: exit %d\n%s", code, errOut)
	}
}

// TestBrokerPostsSignedAlerts: labctl broker with --webhook posts a
// machine's rollback to a local receiver, signed with the secret file's
// secret, and retries when the receiver is busy.
func TestBrokerPostsSignedAlerts(t *testing.T) {
	clearBrokerEnv(t)
	secret := writeFile(t, "hook.secret", "correct horse battery staple\n")
	var mu sync.Mutex
	var got []alert.Event
	calls := 0
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		calls++
		if err := alert.Verify([]byte("correct horse battery staple"), r.Header.Get("X-Lab-Timestamp"), r.Header.Get("X-Lab-Signature"), body, time.Now(), time.Minute); err != nil {
			t.Errorf("delivery %d: %v", calls, err)
		}
		if calls == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable) // the first try fails: the retry must come
			return
		}
		var ev alert.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("body %s: %v", body, err)
		}
		got = append(got, ev)
	}))
	defer rcv.Close()

	addr, errOut := startBroker(t, "--http", "127.0.0.1:0", "--webhook", rcv.URL+"/lab", "--webhook-secret-file", secret)
	ctx := context.Background()
	// What happens once the alerts run is news; what happened before is
	// not (a restart does not announce old news again).
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(errOut.String(), "msg=alerts"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no alerts log:\n%s", errOut.String())
		}
	}
	c := bustest.Dial(t, "mqtt://"+addr, "web", nil, bus.Config{})
	topics, _ := proto.NewTopics(proto.DefaultPrefix)
	status := func(state proto.ExecState, errText string) {
		now := time.Now()
		st := &proto.NodeStatus{Node: "web", Execution: proto.Execution{Rollout: "r-1", Gen: 2, State: state, Error: errText, Since: now.UnixMilli()}, UpdatedAt: now.UnixMilli()}
		st.Stamp("web", now)
		b, err := proto.Seal(st)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Publish(ctx, topics.NodeStatus("web"), b, true); err != nil {
			t.Fatal(err)
		}
	}
	status(proto.StateActivating, "")
	status(proto.StateRolledBack, "health check http failed: connection refused")
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].Kind != alert.MachineRolledBack || got[0].Machine != "web" || !strings.Contains(got[0].Detail, "connection refused") {
		_, so, se := labctl(t, "status", "--json", "--broker", "mqtt://"+addr)
		t.Fatalf("delivered %+v after %d requests\n%s\n%s%s", got, calls, errOut.String(), so, se)
	}
	if calls != 2 {
		t.Errorf("%d requests, want 2 (a 503, then the retry)", calls)
	}
	if !strings.Contains(errOut.String(), `msg=alerts webhooks="generic http://127.0.0.1:`) {
		t.Errorf("no log of the configured webhooks:\n%s", errOut.String())
	}
	// The deliveries are counted on /metrics.
	m := regexp.MustCompile(`msg="dashboard listening" url=(\S+)`).FindStringSubmatch(errOut.String())
	if m == nil {
		t.Fatalf("no dashboard URL in the log:\n%s", errOut.String())
	}
	resp, err := http.Get(m[1] + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"lab_alert_events_total 1\n", `lab_alert_deliveries_total{result="sent"} 1` + "\n", `lab_alert_deliveries_total{result="dropped"} 0` + "\n"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestAlertsDocExample: the config file of docs/alerts.md is read as
// labctl reads it, without an error, into the webhooks it shows.
func TestAlertsDocExample(t *testing.T) {
	clearBrokerEnv(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "alerts.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := docBlockRE.FindAllStringSubmatch(string(b), -1)
	if len(blocks) != 1 {
		t.Fatalf("docs/alerts.md: %d config examples, want 1", len(blocks))
	}
	secret := writeFile(t, "lab-webhook", "s\n")
	slack := writeFile(t, "slack-url", "https://hooks.slack.com/services/T000/B000/XXXX\n")
	path := writeFile(t, "broker.yaml", strings.NewReplacer("/run/secrets/lab-webhook", secret, "/run/secrets/slack-url", slack).Replace(blocks[0][2]))
	g := newGlobals(new(strings.Builder), new(strings.Builder))
	g.v.SetConfigFile(path)
	if err := g.v.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	if err := configkeys.Unknown("docs/alerts.md", g.v.AllKeys(), configKeys()); err != nil {
		t.Error(err)
	}
	hooks, after, err := alertSettings(g)
	if err != nil {
		t.Fatal(err)
	}
	if len(hooks) != 3 || after != 30*time.Minute || hooks[0].Format != alert.Ntfy || len(hooks[0].Events) != 3 ||
		string(hooks[1].Secret) != "s" || hooks[2].Format != alert.Slack || hooks[2].URL != "https://hooks.slack.com/services/T000/B000/XXXX" {
		t.Errorf("read %+v, offline after %s", hooks, after)
	}
}
