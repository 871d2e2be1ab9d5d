package alert

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/clock"
	"github.com/lab-fleet/lab/proto"
)

// receiver is a local webhook receiver that checks signatures and fails
// its first `fail` requests with 503.
type receiver struct {
	t      *testing.T
	secret []byte
	fail   int32

	mu    sync.Mutex
	got   []received
	calls atomic.Int32
	srv   *httptest.Server
}

type received struct {
	path, event, delivery string
	body                  []byte
}

func newReceiver(t *testing.T, secret string, fail int32) *receiver {
	r := &receiver{t: t, secret: []byte(secret), fail: fail}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n := r.calls.Add(1)
		body, _ := io.ReadAll(req.Body)
		if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s with Content-Type %q", req.Method, req.Header.Get("Content-Type"))
		}
		if len(r.secret) > 0 {
			if err := Verify(r.secret, req.Header.Get("X-Lab-Timestamp"), req.Header.Get("X-Lab-Signature"), body, time.Now(), 5*time.Minute); err != nil {
				t.Errorf("delivery %d: %v", n, err)
				http.Error(w, err.Error(), http.StatusUnauthorized)
				return
			}
		}
		if n <= r.fail {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		r.mu.Lock()
		r.got = append(r.got, received{req.URL.Path, req.Header.Get("X-Lab-Event"), req.Header.Get("X-Lab-Delivery"), body})
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) await(n int) []received {
	r.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		r.mu.Lock()
		got := append([]received(nil), r.got...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
	}
	r.t.Fatalf("the receiver got fewer than %d deliveries in 10 s (%d requests)", n, r.calls.Load())
	return nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestSignedDeliveryIsRetried(t *testing.T) {
	rcv := newReceiver(t, "s3cret", 2)
	d := &delivery{hook: Webhook{URL: rcv.srv.URL + "/hook", Format: Generic, Secret: []byte("s3cret")}, client: rcv.srv.Client(),
		clock: clock.Real{}, log: quiet(), backoff: 10 * time.Millisecond, tries: 4, sent: new(atomic.Int64), failed: new(atomic.Int64)}
	ev := Event{Kind: MachineRolledBack, At: t0, Severity: "warning", Machine: "web", Summary: "web rolled back"}
	if err := d.send(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	got := rcv.await(1)
	if c := rcv.calls.Load(); c != 3 {
		t.Errorf("%d requests, want 3 (two 503s, then delivered)", c)
	}
	var back Event
	if err := json.Unmarshal(got[0].body, &back); err != nil {
		t.Fatal(err)
	}
	if back.Kind != MachineRolledBack || back.Machine != "web" || got[0].event != "machine-rolled-back" || got[0].path != "/hook" || got[0].delivery == "" {
		t.Errorf("delivered %+v %+v", got[0], back)
	}
}

func TestRefusedDeliveryIsNotRetried(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		http.Error(w, "no such hook", http.StatusNotFound)
	}))
	defer srv.Close()
	d := &delivery{hook: Webhook{URL: srv.URL}, client: srv.Client(), clock: clock.Real{}, log: quiet(), backoff: time.Millisecond, tries: 5}
	err := d.send(context.Background(), Event{Kind: RolloutFinished})
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "no such hook") {
		t.Errorf("err = %v", err)
	}
	if calls.Load() != 1 {
		t.Errorf("%d requests for a 404, want 1", calls.Load())
	}
	// A wrong signature is what a receiver refuses.
	if err := Verify([]byte("a"), "1", Sign([]byte("b"), "1", []byte("{}")), []byte("{}"), time.Unix(1, 0), time.Minute); err == nil {
		t.Error("a signature with another secret verified")
	}
	if err := Verify([]byte("a"), "1", Sign([]byte("a"), "1", []byte("{}")), []byte("{}"), time.Unix(1000, 0), time.Minute); err == nil {
		t.Error("an old delivery verified")
	}
}

func TestFormats(t *testing.T) {
	ev := Event{Kind: RolloutFinished, State: "failed", Severity: "critical", Summary: "rollout r-1 failed: 2 succeeded, 1 failed"}
	for _, tc := range []struct {
		hook Webhook
		url  string
		keys map[string]any
	}{
		{Webhook{URL: "https://ntfy.example/lab-alerts", Format: Ntfy}, "https://ntfy.example/",
			map[string]any{"topic": "lab-alerts", "title": "lab: rollout failed", "message": ev.Summary, "priority": float64(5)}},
		{Webhook{URL: "https://ntfy.example/sub/path/lab", Format: Ntfy}, "https://ntfy.example/sub/path", map[string]any{"topic": "lab"}},
		{Webhook{URL: "https://hooks.slack.example/services/T/B/X", Format: Slack}, "https://hooks.slack.example/services/T/B/X",
			map[string]any{"text": "*lab: rollout failed*: " + ev.Summary}},
		{Webhook{URL: "https://example.test/lab", Format: Generic}, "https://example.test/lab",
			map[string]any{"event": "rollout-finished", "severity": "critical", "state": "failed"}},
	} {
		req, err := tc.hook.request(context.Background(), ev, "d1", t0)
		if err != nil {
			t.Fatal(err)
		}
		if req.URL.String() != tc.url {
			t.Errorf("%s: posts to %s, want %s", tc.hook.Format, req.URL, tc.url)
		}
		body, _ := io.ReadAll(req.Body)
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("%s: %v", tc.hook.Format, err)
		}
		for k, want := range tc.keys {
			if m[k] != want {
				t.Errorf("%s: %s = %v, want %v (body %s)", tc.hook.Format, k, m[k], want, body)
			}
		}
		if req.Header.Get("X-Lab-Signature") != "" {
			t.Errorf("%s: signed without a secret", tc.hook.Format)
		}
	}
	for _, bad := range []Webhook{{URL: "ftp://x/y"}, {URL: "/relative"}, {URL: "https://ntfy.sh", Format: Ntfy}, {URL: "https://x", Format: "teams"}} {
		if err := bad.Check(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if s := (Webhook{URL: "https://hooks.slack.com/services/T0/B0/SECRET"}).String(); strings.Contains(s, "SECRET") {
		t.Errorf("the log name %q shows the URL's secret path", s)
	}
}

// TestNotifierFollowsTheFleet: a fleet view fed real retained messages;
// a rollout that fails and a machine that rolls back reach a webhook that
// wants them, and only those.
func TestNotifierFollowsTheFleet(t *testing.T) {
	topics, _ := proto.NewTopics("lab")
	fleet := controller.NewFleet(topics, quiet())
	feed := func(topic string, m proto.Message) {
		b, err := proto.Seal(m)
		if err != nil {
			t.Fatal(err)
		}
		fleet.Handle(topic, b)
	}
	now := time.Now()
	st := func(state proto.ExecState, errText string) *proto.NodeStatus {
		return &proto.NodeStatus{Envelope: proto.Envelope{ID: proto.NewID(), TS: now.UnixMilli(), From: "web"}, Node: "web",
			Execution: proto.Execution{Rollout: "r-1", Gen: 2, State: state, Error: errText}, UpdatedAt: now.UnixMilli()}
	}
	rs := func(phase proto.RolloutPhase) *proto.RolloutState {
		return &proto.RolloutState{Envelope: proto.Envelope{ID: proto.NewID(), TS: now.UnixMilli(), From: "controller"}, Rollout: "r-1",
			State: phase, Waves: [][]string{{"web"}}, Counters: proto.Counters{Running: 1}}
	}
	feed(topics.NodePresence("web"), &proto.Presence{Envelope: proto.Envelope{ID: proto.NewID(), TS: now.UnixMilli(), From: "web"}, Node: "web", Online: true, Since: now.UnixMilli()})
	feed(topics.NodeStatus("web"), st(proto.StateActivating, ""))
	feed(topics.Rollout("r-1"), rs(proto.RolloutRunning))

	rcv := newReceiver(t, "k", 1)
	n, err := New(Config{Fleet: fleet, Logger: quiet(), Backoff: 10 * time.Millisecond,
		Webhooks: []Webhook{{URL: rcv.srv.URL, Secret: []byte("k"), Events: []Kind{MachineRolledBack, RolloutFinished}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.Run(ctx)
	select {
	case <-n.primed: // it has seen the fleet as it was: what follows is news
	case <-time.After(5 * time.Second):
		t.Fatal("the notifier did not look at the fleet")
	}
	feed(topics.NodeStatus("web"), st(proto.StateRolledBack, "health check http failed"))
	done := rs(proto.RolloutRolledBack)
	done.Counters = proto.Counters{RolledBack: 1}
	feed(topics.Rollout("r-1"), done)
	got := rcv.await(2)
	events := map[string]bool{}
	for _, g := range got {
		events[g.event] = true
	}
	if !events["machine-rolled-back"] || !events["rollout-finished"] {
		t.Errorf("delivered %v", events)
	}
	if s := n.Stats(); s.Sent < 2 || s.Dropped != 0 {
		t.Errorf("stats %+v", s)
	}
}
