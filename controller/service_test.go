package controller

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/clock"
	"github.com/lab-fleet/lab/internal/testbroker"
	"github.com/lab-fleet/lab/proto"
)

// serviceRig is a controller service on its own MQTT connection and a
// requester (the operator's labctl) on another.
type serviceRig struct {
	t        *testing.T
	b        *testbroker.Broker
	svc      *Service
	store    *BoltStore
	ctlKey   proto.PrivateKey
	opKey    proto.PrivateKey
	req      *bus.Client
	reqFleet *Fleet
	ctl      *Controller // the requester's, for Prepare

	mu      sync.Mutex
	answers map[string]chan []byte
}

type busResponder struct{ c *bus.Client }

func (r busResponder) Respond(ctx context.Context, topic string, corr, payload []byte) error {
	return r.c.PublishMessage(ctx, bus.Message{Topic: topic, Payload: payload, Correlation: corr})
}

func newServiceRig(t *testing.T, trustOperator bool, configure ...func(*ServiceConfig)) *serviceRig {
	t.Helper()
	r := &serviceRig{t: t, b: testbroker.Start(t), answers: map[string]chan []byte{}}
	tp := proto.DefaultTopics
	var err error
	if r.ctlKey, err = proto.GenerateKey("ctl-test"); err != nil {
		t.Fatal(err)
	}
	if r.opKey, err = proto.GenerateKey("op-test"); err != nil {
		t.Fatal(err)
	}
	if r.store, err = OpenStore(filepath.Join(t.TempDir(), "rollouts.db")); err != nil {
		t.Fatal(err)
	}
	fleet := NewFleet(tp, nil)
	var svc *Service
	var svcMu sync.Mutex
	c := dial(t, r.b.URL(), "controller", func(m bus.Message) {
		if strings.HasPrefix(m.Topic, tp.Prefix()+"/ctl/req/") {
			svcMu.Lock()
			s := svc
			svcMu.Unlock()
			s.HandleRequest(RequestMessage{Topic: m.Topic, Payload: m.Payload, ResponseTopic: m.ResponseTopic, Correlation: m.Correlation})
			return
		}
		fleet.Handle(m.Topic, m.Payload)
	})
	trusted := proto.Keyring{}
	if trustOperator {
		trusted[r.opKey.ID] = r.opKey.Public().Key
	}
	cfg := ServiceConfig{Bus: c, Responder: busResponder{c}, Fleet: fleet, Topics: tp, Name: "controller",
		Store: r.store, Key: r.ctlKey, Trusted: trusted}
	for _, f := range configure {
		f(&cfg)
	}
	s, err := NewService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	svcMu.Lock()
	svc = s
	svcMu.Unlock()
	r.svc = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := fleet.Subscribe(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(context.Background(), s.Filters()...); err != nil {
		t.Fatal(err)
	}
	r.reqFleet = NewFleet(tp, nil)
	r.req = dial(t, r.b.URL(), "alice", func(m bus.Message) {
		if strings.HasPrefix(m.Topic, tp.Prefix()+"/ctl/res/") {
			r.mu.Lock()
			ch := r.answers[string(m.Correlation)]
			r.mu.Unlock()
			if ch != nil {
				ch <- m.Payload
			}
			return
		}
		r.reqFleet.Handle(m.Topic, m.Payload)
	})
	if err := r.req.Subscribe(context.Background(), append(r.reqFleet.Filters(), tp.CtlResponses("alice"))...); err != nil {
		t.Fatal(err)
	}
	r.ctl = New(r.req, r.reqFleet, tp, "alice")
	return r
}

// ask sends one request and returns the answer.
func (r *serviceRig) ask(verb string, req *Request) *Response {
	r.t.Helper()
	b, err := EncodeRequest(req)
	if err != nil {
		r.t.Fatal(err)
	}
	return r.askRaw(verb, b)
}

func (r *serviceRig) askRaw(verb string, body []byte) *Response {
	r.t.Helper()
	corr := proto.NewID()
	ch := make(chan []byte, 1)
	r.mu.Lock()
	r.answers[corr] = ch
	r.mu.Unlock()
	tp := proto.DefaultTopics
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.req.PublishMessage(ctx, bus.Message{Topic: tp.CtlRequest(verb), Payload: body,
		ResponseTopic: tp.CtlResponse("alice", corr), Correlation: []byte(corr)}); err != nil {
		r.t.Fatal(err)
	}
	select {
	case b := <-ch:
		resp, err := DecodeResponse(b)
		if err != nil {
			r.t.Fatal(err)
		}
		return resp
	case <-ctx.Done():
		r.t.Fatalf("no answer to %s", verb)
	}
	return nil
}

// settle waits until the requester's view knows the nodes.
func (r *serviceRig) settle(nodes ...string) {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, n := range nodes {
		for {
			if v, _ := r.reqFleet.Get(n); v.Status != nil {
				break
			}
			if time.Now().After(deadline) {
				r.t.Fatalf("%s never reported", n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (r *serviceRig) waitRecord(id string, want proto.RolloutPhase) *Record {
	r.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		rec, err := r.store.Get(id)
		if err == nil && rec.State == want {
			return rec
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("rollout %s: record %+v (err %v), want %s", id, rec, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestServiceDrivesASubmittedRollout(t *testing.T) {
	r := newServiceRig(t, true)
	simNode(t, r.b, "n1", proto.StateSucceeded)
	simNode(t, r.b, "n2", proto.StateSucceeded)
	r.settle("n1", "n2")
	plan := Plan{ID: "r-sub-1", Targets: map[string]string{"n1": tlA, "n2": tlA}}
	sub, err := r.ctl.Prepare(plan, &r.opKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	resp := r.ask(VerbSubmit, &Request{Submission: sub, From: "alice"})
	if resp.Code != CodeOK || resp.Rollout != "r-sub-1" {
		t.Fatalf("submit: %+v", resp)
	}
	rec := r.waitRecord("r-sub-1", proto.RolloutSucceeded)
	if rec.Submitter != "alice" || rec.KeyID != "op-test" {
		t.Errorf("record: submitter %q key %q", rec.Submitter, rec.KeyID)
	}
	if rec.Result == nil || rec.Result.Counters.Succeeded != 2 {
		t.Errorf("result: %+v", rec.Result)
	}
	// The same id again is refused with a reason.
	if resp := r.ask(VerbSubmit, &Request{Submission: sub}); resp.Code != CodeRefused || !strings.Contains(resp.Error, "r-sub-1") {
		t.Errorf("second submit: %+v", resp)
	}
	show := r.ask(VerbShow, &Request{Rollout: "r-sub-1"})
	if show.Code != CodeOK || show.Record == nil || show.Record.State != proto.RolloutSucceeded {
		t.Errorf("show: %+v", show)
	}
	list := r.ask(VerbList, &Request{})
	if list.Code != CodeOK || len(list.Records) != 1 || list.Records[0].Plan.ID != "r-sub-1" {
		t.Errorf("list: %+v", list)
	}
	if nf := r.ask(VerbShow, &Request{Rollout: "r-nope"}); nf.Code != CodeNotFound {
		t.Errorf("show unknown: %+v", nf)
	}
	info := r.ask(VerbInfo, &Request{})
	if info.Code != CodeOK || info.Info == nil || info.Info.Key != r.ctlKey.Public().String() {
		t.Errorf("info: %+v", info)
	}
}

func TestServiceRefusesWhatTheOperatorDidNotSign(t *testing.T) {
	r := newServiceRig(t, true)
	simNode(t, r.b, "n1", proto.StateSucceeded)
	r.settle("n1")
	other, _ := proto.GenerateKey("mallory")
	forged, err := r.ctl.Prepare(Plan{ID: "r-forged", Targets: map[string]string{"n1": tlA}}, &other, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	unsigned, err := r.ctl.Prepare(Plan{ID: "r-unsigned", Targets: map[string]string{"n1": tlA}}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Signed by the operator, but the plan was changed after signing.
	tampered, err := r.ctl.Prepare(Plan{ID: "r-tampered", Targets: map[string]string{"n1": tlA}}, &r.opKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tampered.Plan.Targets["n1"] = tlB
	// The controller's key cannot sign a Desired either.
	byCtl, err := r.ctl.Prepare(Plan{ID: "r-by-ctl", Targets: map[string]string{"n1": tlA}}, &r.ctlKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		sub  *Submission
		want string
	}{
		{forged, "unknown key"},
		{unsigned, "not signed"},
		{tampered, "the plan says"},
		{byCtl, "unknown key"},
	} {
		resp := r.ask(VerbSubmit, &Request{Submission: c.sub})
		if resp.Code != CodeRefused || !strings.Contains(resp.Error, c.want) {
			t.Errorf("%s: %+v, want refused with %q", c.sub.Plan.ID, resp, c.want)
		}
		if _, err := r.store.Get(c.sub.Plan.ID); !errors.Is(err, ErrNoRollout) {
			t.Errorf("%s: recorded (%v)", c.sub.Plan.ID, err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if v, _ := r.reqFleet.Get("n1"); v.DesiredGen != 0 {
		t.Errorf("a refused submission published a desired state (gen %d)", v.DesiredGen)
	}
	if bad := r.askRaw(VerbSubmit, []byte{0xc1, 0x00}); bad.Code != CodeBadRequest {
		t.Errorf("garbage: %+v", bad)
	}
	if bad := r.ask("frobnicate", &Request{}); bad.Code != CodeBadRequest || !strings.Contains(bad.Error, "unknown verb") {
		t.Errorf("unknown verb: %+v", bad)
	}
}

func TestServiceTakesASubmissionInParts(t *testing.T) {
	r := newServiceRig(t, true)
	for _, n := range []string{"n1", "n2", "n3"} {
		simNode(t, r.b, n, proto.StateSucceeded)
	}
	r.settle("n1", "n2", "n3")
	sub, err := r.ctl.Prepare(Plan{ID: "r-parts", Targets: map[string]string{"n1": tlA, "n2": tlA, "n3": tlB}}, &r.opKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	reqs, err := SplitRequests(sub, 256)
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) < 3 {
		t.Fatalf("%d parts: the test wants several", len(reqs))
	}
	for i, req := range reqs {
		resp := r.ask(VerbSubmit, req)
		if resp.Code != CodeOK {
			t.Fatalf("part %d: %+v", i, resp)
		}
		if _, err := r.store.Get("r-parts"); (err == nil) != (i == len(reqs)-1) {
			t.Fatalf("after part %d of %d: record %v", i, len(reqs), err)
		}
	}
	r.waitRecord("r-parts", proto.RolloutSucceeded)
	// A part out of order is refused.
	if resp := r.ask(VerbSubmit, &Request{Upload: "u-1", Part: 1, Parts: 2, Chunk: []byte{1}}); resp.Code != CodeBadRequest {
		t.Errorf("stray part: %+v", resp)
	}
}

func TestServiceCancelsARunningRollout(t *testing.T) {
	r := newServiceRig(t, true)
	simNode(t, r.b, "n1", proto.StateSucceeded)
	r.settle("n1")
	// n2 never reports: the wave waits for it until its deadline.
	plan := Plan{ID: "r-cancel", Targets: map[string]string{"n1": tlA, "n2": tlA}, WaveDeadline: time.Hour}
	sub, err := r.ctl.Prepare(plan, &r.opKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if resp := r.ask(VerbSubmit, &Request{Submission: sub}); resp.Code != CodeOK {
		t.Fatalf("submit: %+v", resp)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(r.svc.Running()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	resp := r.ask(VerbCancel, &Request{Rollout: "r-cancel", From: "bob"})
	if resp.Code != CodeOK || resp.Record == nil || resp.Record.State != proto.RolloutCancelled {
		t.Fatalf("cancel: %+v", resp)
	}
	if resp.Record.Reason != "cancelled by bob" {
		t.Errorf("reason %q, want the one who asked: cancelled by bob", resp.Record.Reason)
	}
	if got := r.svc.Running(); len(got) != 0 {
		t.Errorf("still driving %v after the cancel", got)
	}
	if again := r.ask(VerbResume, &Request{Rollout: "r-cancel"}); again.Code != CodeRefused {
		t.Errorf("resume after cancel: %+v", again)
	}
}

// A multi-wave rollout whose gated targets say they do not pin the
// service's key is refused with the fix: they would wait for their
// wave forever.
func TestServiceRefusesGatesTheNodesWouldReject(t *testing.T) {
	r := newServiceRig(t, true)
	tp := proto.DefaultTopics
	c := dial(t, r.b.URL(), "pinner", nil)
	for _, n := range []string{"n1", "n2"} {
		st := &proto.NodeStatus{Node: n, Groups: []string{"web"}, Pins: &proto.KeyPins{Operator: []string{r.opKey.ID}}}
		st.Stamp(n, time.Now())
		b, err := proto.Seal(st)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Publish(context.Background(), tp.NodeStatus(n), b, true); err != nil {
			t.Fatal(err)
		}
	}
	r.settle("n1", "n2")
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) { // the service's own view, too
		if v, _ := r.svc.cfg.Fleet.Get("n2"); v.Status != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	plan := Plan{ID: "r-pins", Targets: map[string]string{"n1": tlA, "n2": tlA}, Strategy: Strategy{Kind: StrategyRolling, Batch: Size{N: 1}}}
	sub, err := r.ctl.Prepare(plan, &r.opKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(sub.Gated) != 2 {
		t.Fatalf("gated %v: the test wants both targets opened by gates", sub.Gated)
	}
	resp := r.ask(VerbSubmit, &Request{Submission: sub})
	if resp.Code != CodeRefused || !strings.Contains(resp.Error, "controller_keys") || !strings.Contains(resp.Error, r.ctlKey.Public().String()) {
		t.Fatalf("submit: %+v, want refused naming the key to pin", resp)
	}
	// One wave needs no gate: the same targets are accepted.
	one, err := r.ctl.Prepare(Plan{ID: "r-pins-1", Targets: map[string]string{"n1": tlA, "n2": tlA}}, &r.opKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if resp := r.ask(VerbSubmit, &Request{Submission: one}); resp.Code != CodeOK {
		t.Fatalf("single wave: %+v", resp)
	}
}

// A paused rollout opens no further wave, even after the current wave's
// deadline; resumed, it goes on.
func TestServicePausesAndResumes(t *testing.T) {
	r := newServiceRig(t, true)
	log := &switchLog{}
	startGateNode(t, &rig{b: r.b}, log, "b", []string{"web"}, proto.StateSucceeded)
	r.settle("b")
	// a never reports: wave 1 lasts its whole deadline.
	plan := Plan{ID: "r-pause", Targets: map[string]string{"a": tlA, "b": tlA}, Strategy: Strategy{Kind: StrategyRolling, Batch: Size{N: 1}},
		WaveDeadline: 1500 * time.Millisecond}
	sub, err := r.ctl.Prepare(plan, &r.opKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if resp := r.ask(VerbSubmit, &Request{Submission: sub}); resp.Code != CodeOK {
		t.Fatalf("submit: %+v", resp)
	}
	resp := r.ask(VerbPause, &Request{Rollout: "r-pause", From: "alice"})
	if resp.Code != CodeOK || resp.Record == nil || resp.Record.Paused != "alice" {
		t.Fatalf("pause: %+v", resp)
	}
	time.Sleep(3 * time.Second) // past wave 1's deadline
	if got := log.list(); len(got) != 0 {
		t.Fatalf("a wave opened while paused: %v acted", got)
	}
	if again := r.ask(VerbResume, &Request{Rollout: "r-pause"}); again.Code != CodeOK || again.Record.Paused != "" {
		t.Fatalf("resume: %+v", again)
	}
	rec := r.waitRecord("r-pause", proto.RolloutPending) // a is still offline
	if got := log.list(); len(got) != 1 || got[0] != "b" {
		t.Errorf("acted %v, want b after the resume", got)
	}
	if rec.Paused != "" {
		t.Errorf("record still paused by %q", rec.Paused)
	}
	if p := r.ask(VerbPause, &Request{Rollout: "r-pause"}); p.Code != CodeRefused {
		t.Errorf("pause of an ended rollout: %+v", p)
	}
}

// The service's rollouts run on the service's clock: a scheduled one
// publishes nothing until that clock reaches its time.
func TestServiceRunsOnItsClock(t *testing.T) {
	now := time.Now()
	clk := clock.NewFake(now)
	r := newServiceRig(t, true, func(c *ServiceConfig) { c.Clock = clk })
	simNode(t, r.b, "n1", proto.StateSucceeded)
	r.settle("n1")
	sub, err := r.ctl.Prepare(Plan{ID: "r-later", Targets: map[string]string{"n1": tlA}, NotBefore: now.Add(time.Hour)}, &r.opKey, now)
	if err != nil {
		t.Fatal(err)
	}
	if resp := r.ask(VerbSubmit, &Request{Submission: sub, From: "alice"}); resp.Code != CodeOK {
		t.Fatalf("submit: %+v", resp)
	}
	time.Sleep(1500 * time.Millisecond) // the rollout's loop ticks every second
	if v, _ := r.reqFleet.Get("n1"); v.DesiredGen != 0 {
		t.Fatal("published before its time on the service's clock")
	}
	rec, err := r.store.Get("r-later")
	if err != nil || !rec.Created.Equal(now) || rec.State != proto.RolloutRunning {
		t.Fatalf("record %+v, %v: want running, created at the service's now", rec, err)
	}
	clk.Advance(time.Hour)
	r.waitRecord("r-later", proto.RolloutSucceeded)
}

// TestServiceForgetsAMachine: forget clears the retained status, presence
// and desired state of a machine that is gone, so every view drops it; an
// online machine and an unknown one are refused.
func TestServiceForgetsAMachine(t *testing.T) {
	r := newServiceRig(t, true)
	tp := proto.DefaultTopics
	now := time.Now()
	for name, online := range map[string]bool{"old": false, "live": true} {
		st := &proto.NodeStatus{Node: name, UpdatedAt: now.UnixMilli(),
			Secrets: []proto.SecretState{{Name: "db", Version: 1, State: proto.SecretPresent, At: now.UnixMilli()}}}
		st.Stamp(name, now)
		if err := r.b.Server.Publish(tp.NodeSecret(name, "db"), []byte("ciphertext of "+name), true, 1); err != nil {
			t.Fatal(err)
		}
		p := &proto.Presence{Node: name, Online: online, Since: now.UnixMilli()}
		p.Stamp(name, now)
		for topic, m := range map[string]proto.Message{tp.NodeStatus(name): st, tp.NodePresence(name): p} {
			b, err := proto.Seal(m)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.b.Server.Publish(topic, b, true, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	r.settle("old", "live")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if v, _ := r.svc.cfg.Fleet.Get("live"); v.Online {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the service never saw live online")
		}
	}
	if resp := r.ask(VerbForget, &Request{Node: "nobody"}); resp.Code != CodeNotFound {
		t.Errorf("forget an unknown machine: %+v", resp)
	}
	if resp := r.ask(VerbForget, &Request{Node: "live"}); resp.Code != CodeRefused || !strings.Contains(resp.Error, "live is online") {
		t.Errorf("forget an online machine: %+v", resp)
	}
	if resp := r.ask(VerbForget, &Request{Node: "Bad Name"}); resp.Code != CodeBadRequest {
		t.Errorf("forget a bad name: %+v", resp)
	}
	if resp := r.ask(VerbForget, &Request{Node: "old"}); resp.Code != CodeOK {
		t.Fatalf("forget an offline machine: %+v", resp)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		names := []string{}
		for _, v := range r.reqFleet.Snapshot() {
			names = append(names, v.Name)
		}
		if len(names) == 1 && names[0] == "live" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the requester's view still shows %v, want only live", names)
		}
	}
	// A new client gets nothing retained of it, its secrets included.
	fresh := NewFleet(tp, nil)
	var secretsMu sync.Mutex
	secrets := map[string]bool{}
	c := dial(t, r.b.URL(), "fresh", func(m bus.Message) {
		if strings.Contains(m.Topic, "/secret/") {
			secretsMu.Lock()
			secrets[m.Topic] = true
			secretsMu.Unlock()
			return
		}
		fresh.Handle(m.Topic, m.Payload)
	})
	if err := c.Subscribe(context.Background(), append(fresh.Filters(), tp.AllSecrets())...); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	secretsMu.Lock()
	if secrets[tp.NodeSecret("old", "db")] || !secrets[tp.NodeSecret("live", "db")] {
		t.Errorf("retained secrets after forgetting old: %v, want live's only", secrets)
	}
	secretsMu.Unlock()
	if v, ok := fresh.Get("old"); ok && (v.Status != nil || v.Seen) {
		t.Errorf("the broker still retains old: %+v", v)
	}
	if _, ok := fresh.Get("live"); !ok {
		t.Error("a new client does not see live: the test proves nothing")
	}
}
