package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/proto"
)

const sys = proto.StoreDir + "0123456789abcdfghijklmnpqrsvwxyz-nixos-system-n1"

// feed hands the fleet one sealed message, as the broker would.
func feed(t *testing.T, f *controller.Fleet, topic string, m interface {
	proto.Message
	Stamp(string, time.Time)
}) {
	t.Helper()
	m.Stamp("test", time.Now())
	b, err := proto.Seal(m)
	if err != nil {
		t.Fatal(err)
	}
	f.Handle(topic, b)
}

func online(t *testing.T, f *controller.Fleet, name string, exec proto.Execution) {
	t.Helper()
	feed(t, f, proto.DefaultTopics.NodePresence(name), &proto.Presence{Node: name, Online: true, Since: time.Now().UnixMilli()})
	feed(t, f, proto.DefaultTopics.NodeStatus(name), &proto.NodeStatus{Node: name, Groups: []string{"all"}, Current: sys, Booted: sys,
		Execution: exec, UpdatedAt: time.Now().UnixMilli(),
		Generations: []proto.Generation{{Number: 1, Toplevel: sys, Current: true}}})
}

// fakeAuth knows two logins and counts its checks.
type fakeAuth struct {
	mu     sync.Mutex
	checks int
}

func (a *fakeAuth) Login(_, user string, pw []byte) (string, error) {
	a.mu.Lock()
	a.checks++
	a.mu.Unlock()
	switch {
	case user == "grace" && string(pw) == "viewer-pw":
		return RoleViewer, nil
	case user == "ops" && string(pw) == "controller-pw":
		return RoleController, nil
	case user == "n1" && string(pw) == "node-pw":
		return "node", nil
	}
	return "", ErrLogin
}

// fakeService records what the dashboard asked.
type fakeService struct {
	mu    sync.Mutex
	asked []string
}

func (s *fakeService) Ask(_ context.Context, verb string, req *controller.Request, who string) *controller.Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, verb+" "+req.Rollout+" by "+who)
	if req.Rollout == "r-missing" {
		return &controller.Response{Code: controller.CodeNotFound, Error: "no rollout r-missing"}
	}
	return &controller.Response{Code: controller.CodeOK, Record: &controller.Record{}}
}

func do(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		if k == "Host" {
			r.Host = v
			continue
		}
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// Without a login the dashboard answers only to loopback names: a page of
// another site that resolves its own name to 127.0.0.1 (DNS rebinding)
// sends its own Host and is refused.
func TestNoLoginAnswersOnlyLoopbackNames(t *testing.T) {
	s := New(Config{Fleet: controller.NewFleet(proto.DefaultTopics, nil)})
	for host, want := range map[string]int{
		"localhost:8380": 200, "127.0.0.1:8380": 200, "[::1]:8380": 200, "lab.localhost": 200, "127.1.2.3": 200,
		"evil.example:8380": http.StatusMisdirectedRequest, "192.0.2.1:8380": http.StatusMisdirectedRequest, "localhost.evil.example": http.StatusMisdirectedRequest,
	} {
		if got := do(t, s, "GET", "/api/fleet", map[string]string{"Host": host}).Code; got != want {
			t.Errorf("Host %s: %d, want %d", host, got, want)
		}
	}
	w := do(t, s, "GET", "/", map[string]string{"Host": "localhost"})
	if w.Code != 200 || !strings.Contains(w.Body.String(), "<script") {
		t.Fatalf("the page: %d %.200s", w.Code, w.Body)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("no CSP: %q", csp)
	}
}

// With a login: none asks for one, a node's identity or a wrong password
// is refused, a viewer sees but may not act, a controller acts; logins
// are checked once and then trusted for a while.
func TestLoginRolesAndActions(t *testing.T) {
	f := controller.NewFleet(proto.DefaultTopics, nil)
	online(t, f, "n1", proto.Execution{State: proto.StateIdle})
	auth, svc := &fakeAuth{}, &fakeService{}
	s := New(Config{Fleet: f, Auth: auth, Service: svc})
	basic := func(u, p string, more ...string) map[string]string {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth(u, p)
		h := map[string]string{"Authorization": r.Header.Get("Authorization"), "Host": "lab.example.org"}
		for i := 0; i+1 < len(more); i += 2 {
			h[more[i]] = more[i+1]
		}
		return h
	}
	if w := do(t, s, "GET", "/api/fleet", map[string]string{"Host": "lab.example.org"}); w.Code != 401 || !strings.Contains(w.Header().Get("WWW-Authenticate"), "Basic") {
		t.Errorf("no login: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
	for _, bad := range [][2]string{{"grace", "wrong"}, {"n1", "node-pw"}, {"nobody", "x"}} {
		if w := do(t, s, "GET", "/api/fleet", basic(bad[0], bad[1])); w.Code != 401 {
			t.Errorf("login %s/%s: %d, want 401", bad[0], bad[1], w.Code)
		}
	}
	w := do(t, s, "GET", "/api/fleet", basic("grace", "viewer-pw"))
	var fd FleetData
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &fd) != nil || len(fd.Machines) != 1 || fd.Machines[0].Node != "n1" || fd.Counts.Online != 1 {
		t.Fatalf("viewer's fleet: %d %s", w.Code, w.Body)
	}
	w = do(t, s, "GET", "/api/whoami", basic("grace", "viewer-pw"))
	if !strings.Contains(w.Body.String(), `"role":"viewer"`) || !strings.Contains(w.Body.String(), `"actions":false`) {
		t.Errorf("viewer's whoami: %s", w.Body)
	}
	if w := do(t, s, "POST", "/api/rollouts/r-1/cancel", basic("grace", "viewer-pw", "X-Lab-Action", "1")); w.Code != 403 {
		t.Errorf("a viewer cancelled: %d %s", w.Code, w.Body)
	}
	if w := do(t, s, "POST", "/api/rollouts/r-1/cancel", basic("ops", "controller-pw")); w.Code != 403 || !strings.Contains(w.Body.String(), "X-Lab-Action") {
		t.Errorf("an action without X-Lab-Action (a cross-site form): %d %s", w.Code, w.Body)
	}
	if w := do(t, s, "POST", "/api/rollouts/r-1/cancel", basic("ops", "controller-pw", "X-Lab-Action", "1", "Origin", "https://evil.example")); w.Code != 403 {
		t.Errorf("a cross-origin action: %d %s", w.Code, w.Body)
	}
	if w := do(t, s, "POST", "/api/rollouts/r-1/reboot", basic("ops", "controller-pw", "X-Lab-Action", "1")); w.Code != 404 {
		t.Errorf("an unknown action: %d %s", w.Code, w.Body)
	}
	if w := do(t, s, "POST", "/api/rollouts/r-missing/pause", basic("ops", "controller-pw", "X-Lab-Action", "1")); w.Code != 404 {
		t.Errorf("pause of a missing rollout: %d %s", w.Code, w.Body)
	}
	if w := do(t, s, "POST", "/api/rollouts/r-1/pause", basic("ops", "controller-pw", "X-Lab-Action", "1", "Origin", "https://lab.example.org")); w.Code != 200 {
		t.Errorf("the controller's pause: %d %s", w.Code, w.Body)
	}
	svc.mu.Lock()
	asked := strings.Join(svc.asked, "; ")
	svc.mu.Unlock()
	if asked != "pause r-missing by ops; pause r-1 by ops" {
		t.Errorf("the service was asked: %s", asked)
	}
	auth.mu.Lock()
	checks := auth.checks
	auth.mu.Unlock()
	if checks != 3+2 { // 3 bad logins, and grace and ops once each
		t.Errorf("%d password checks, want 5 (a good login is cached)", checks)
	}
}

// The machine page has its generations and events; bad names are 400,
// unknown ones 404.
func TestMachineAndRolloutPages(t *testing.T) {
	f := controller.NewFleet(proto.DefaultTopics, nil)
	online(t, f, "n1", proto.Execution{State: proto.StateFailed, Rollout: "r-1", Gen: 2, Error: "health check web failed"})
	feed(t, f, proto.DefaultTopics.NodeEvents("n1"), &proto.Event{Node: "n1", Rollout: "r-1", Gen: 2, Prev: proto.StateActivating, State: proto.StateFailed, Detail: "health check web failed"})
	feed(t, f, proto.DefaultTopics.Rollout("r-1"), &proto.RolloutState{Rollout: "r-1", State: proto.RolloutHalted, Reason: "1 of 1 failed",
		Waves: [][]string{{"n1"}}, Counters: proto.Counters{Total: 1, Failed: 1},
		Nodes: proto.NodeProgressMap{"n1": {Wave: 1, Gen: 2, Toplevel: sys, State: proto.StateFailed, Error: "health check web failed"}}})
	s := New(Config{Fleet: f})
	local := map[string]string{"Host": "localhost"}
	w := do(t, s, "GET", "/api/machines/n1", local)
	var md MachineData
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &md) != nil {
		t.Fatalf("machine: %d %s", w.Code, w.Body)
	}
	if len(md.Generations) != 1 || !md.Generations[0].Current || len(md.Lines) != 1 || md.Lines[0].Detail != "health check web failed" || !md.Lines[0].Trouble {
		t.Errorf("machine page: %+v", md)
	}
	if md.Machine.Attention == "" {
		t.Errorf("a failed machine needs no attention: %+v", md.Machine)
	}
	for target, want := range map[string]int{"/api/machines/n2": 404, "/api/machines/a..b": 400, "/api/rollouts/r-2": 404, "/api/rollouts/x%20y": 400} {
		if got := do(t, s, "GET", target, local).Code; got != want {
			t.Errorf("%s: %d, want %d", target, got, want)
		}
	}
	w = do(t, s, "GET", "/api/rollouts/r-1", local)
	var rd RolloutData
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &rd) != nil {
		t.Fatalf("rollout: %d %s", w.Code, w.Body)
	}
	if rd.Rollout.Reason != "1 of 1 failed" || len(rd.Rollout.Waves) != 1 || len(rd.Rollout.Targets) != 1 || rd.Rollout.Targets[0].Error == "" {
		t.Errorf("rollout page: %+v", rd.Rollout)
	}
	if len(rd.Actions) != 0 {
		t.Errorf("actions without a controller service: %v", rd.Actions)
	}
}

// The live stream starts with a snapshot, then sends only the rows that
// changed.
func TestLiveStreamSnapshotThenChanges(t *testing.T) {
	f := controller.NewFleet(proto.DefaultTopics, nil)
	online(t, f, "n1", proto.Execution{State: proto.StateIdle})
	online(t, f, "n2", proto.Execution{State: proto.StateIdle})
	s := New(Config{Fleet: f, UpdateInterval: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	srv := httptest.NewServer(s)
	defer srv.Close()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/live", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := make(chan [2]string, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var name string
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				name = v
			} else if v, ok := strings.CutPrefix(line, "data: "); ok {
				events <- [2]string{name, v}
			}
		}
		close(events)
	}()
	next := func() [2]string {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatal("the stream ended")
			}
			return e
		case <-time.After(5 * time.Second):
			t.Fatal("no event in 5 s")
		}
		return [2]string{}
	}
	first := next()
	var snap FleetData
	if first[0] != "snapshot" || json.Unmarshal([]byte(first[1]), &snap) != nil || len(snap.Machines) != 2 {
		t.Fatalf("first event %s %.300s", first[0], first[1])
	}
	update := func() Update {
		e := next()
		if e[0] != "update" {
			t.Fatalf("event %s after the snapshot", e[0])
		}
		var up Update
		if err := json.Unmarshal([]byte(e[1]), &up); err != nil {
			t.Fatal(err)
		}
		return up
	}
	// The first update after a page connects may resend every row.
	online(t, f, "n1", proto.Execution{State: proto.StateQueued, Rollout: "r-1", Gen: 2})
	for n1 := false; !n1; {
		for _, r := range update().Machines {
			n1 = n1 || r.Node == "n1" && r.State == proto.StateQueued
		}
	}
	// Then only what changed.
	online(t, f, "n2", proto.Execution{State: proto.StateFetching, Rollout: "r-1", Gen: 2})
	var up Update
	for n2 := false; !n2; {
		up = update()
		if len(up.Machines) != 1 || up.Machines[0].Node != "n2" {
			t.Fatalf("update after n2 changed: %+v", up.Machines)
		}
		n2 = up.Machines[0].State == proto.StateFetching
	}
	if len(up.Rollouts) != 0 || up.Counts.Machines != 2 || up.Counts.ByState[proto.StateFetching] != 1 {
		t.Errorf("update's counts and rollouts: %+v %+v", up.Counts, up.Rollouts)
	}
}
