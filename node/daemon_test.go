package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/bustest"
	"github.com/lab-fleet/lab/internal/testbroker"
	"github.com/lab-fleet/lab/node/nixsys/nixsystest"
	"github.com/lab-fleet/lab/proto"
)

// After another client with the node's name took the session over, the
// node says it is online again a moment after it reconnected: the broker
// may publish the thrown-out connection's Last Will ("offline") after the
// node's first "online".
func TestPresenceSaidAgainAfterTakeover(t *testing.T) {
	br := testbroker.Start(t)
	d, _ := runPresenceNode(t, br)
	watch, awaitPresence, drain := watchPresence(t, br)
	awaitPresence(true, 10*time.Second)
	time.Sleep(500 * time.Millisecond) // the retained copy and the live one
	drain()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	// A second "n1" connects (takes the session) and leaves at once.
	twin, err := bus.Dial(context.Background(), bus.Config{URLs: []string{br.URL()}, ClientID: "n1", SessionExpiry: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := twin.AwaitConnection(wctx); err != nil {
		t.Fatal(err)
	}
	if err := twin.Close(wctx); err != nil {
		t.Fatal(err)
	}
	awaitPresence(true, 10*time.Second) // n1 back after its backoff
	// The thrown-out connection's will lands late.
	off, err := d.presence(false)
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Publish(wctx, proto.DefaultTopics.NodePresence("n1"), off, true); err != nil {
		t.Fatal(err)
	}
	awaitPresence(false, 5*time.Second)
	awaitPresence(true, 2*takeoverSettle)
}

// A late Last Will with no takeover this labd could know of (its new
// connection took over one the broker had not seen die): the retained
// presence says offline while the node runs, and labd answers at once.
// After labd's goodbye its "offline" stands.
func TestLateWillAnsweredWithOnline(t *testing.T) {
	br := testbroker.Start(t)
	d, stop := runPresenceNode(t, br)
	watch, awaitPresence, drain := watchPresence(t, br)
	awaitPresence(true, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	drain()

	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	off, err := d.presence(false)
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Publish(wctx, proto.DefaultTopics.NodePresence("n1"), off, true); err != nil {
		t.Fatal(err)
	}
	awaitPresence(false, 5*time.Second)
	awaitPresence(true, takeoverSettle/2) // not the takeover timer: an answer
	if got := retainedPresence(t, br); !got.Online {
		t.Fatalf("retained presence after the answer: %+v", got)
	}

	stop()
	if got := retainedPresence(t, br); got.Online {
		t.Fatalf("retained presence after labd stopped: %+v, want offline", got)
	}
}

// runPresenceNode runs a daemon named n1 (fake Nix) against br; stop ends
// it and waits (also at cleanup).
func runPresenceNode(t *testing.T, br *testbroker.Broker) (*Daemon, func()) {
	t.Helper()
	dir := t.TempDir()
	d, err := New(Config{Name: "n1", Broker: []string{br.URL()}, StateDir: filepath.Join(dir, "state"),
		BootIDFile: filepath.Join(dir, "boot_id"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nixsystest.New())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return d, stop
}

// watchPresence subscribes to n1's presence; await waits for a message
// saying online == want (skipping others), drain forgets what arrived.
func watchPresence(t *testing.T, br *testbroker.Broker) (_ *bus.Client, await func(want bool, within time.Duration), drain func()) {
	t.Helper()
	watch, presences := subscribePresence(t, br, "watch")
	drain = func() {
		for len(presences) > 0 {
			<-presences
		}
	}
	return watch, func(want bool, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case p := <-presences:
				if p.Online == want {
					return
				}
			case <-deadline:
				t.Fatalf("no presence online=%v within %s", want, within)
			}
		}
	}, drain
}

// retainedPresence is what a client subscribing now gets for n1.
func retainedPresence(t *testing.T, br *testbroker.Broker) proto.Presence {
	t.Helper()
	c, presences := subscribePresence(t, br, "late-reader")
	defer c.Close(context.Background())
	select {
	case p := <-presences:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no retained presence for n1")
	}
	return proto.Presence{}
}

// subscribePresence connects a client (id) subscribed to n1's presence;
// every presence it receives goes to the channel (dropped when full).
func subscribePresence(t *testing.T, br *testbroker.Broker, id string) (*bus.Client, <-chan proto.Presence) {
	t.Helper()
	presences := make(chan proto.Presence, 100)
	c := listen(t, br, id, func(m bus.Message) {
		var p proto.Presence
		if proto.Decode(m.Payload, &p) == nil {
			select {
			case presences <- p:
			default:
			}
		}
	}, proto.DefaultTopics.NodePresence("n1"))
	return c, presences
}

// testNode runs a daemon named n1 on fake Nix (installed with tlOld)
// against a test broker, pinning key; statuses gets every status it
// publishes. prepare, if not nil, runs on the state directory first.
func testNode(t *testing.T, fake *nixsystest.Fake, key proto.PrivateKey, prepare func(stateDir string)) (br *testbroker.Broker, statuses chan proto.NodeStatus) {
	t.Helper()
	br, statuses, _ = testNodeWith(t, fake, key, prepare, nil)
	return br, statuses
}

// testNodeWith is testNode with edit, if not nil, changing the config
// first (it sees the broker's address in cfg.Broker); stop ends the
// daemon and waits (also at cleanup).
func testNodeWith(t *testing.T, fake *nixsystest.Fake, key proto.PrivateKey, prepare func(stateDir string), edit func(*Config)) (br *testbroker.Broker, statuses chan proto.NodeStatus, stop func()) {
	t.Helper()
	br = testbroker.Start(t)
	dir := t.TempDir()
	fake.SetCurrent(tlOld)
	if prepare != nil {
		prepare(filepath.Join(dir, "state"))
	}
	cfg := Config{Name: "n1", Broker: []string{br.URL()}, StateDir: filepath.Join(dir, "state"), TrustedKeys: []string{key.Public().String()},
		BootIDFile: filepath.Join(dir, "boot_id"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if edit != nil {
		edit(&cfg)
	}
	d, err := New(cfg, fake)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	statuses = make(chan proto.NodeStatus, 100)
	listen(t, br, "ctl", func(m bus.Message) {
		var s proto.NodeStatus
		if proto.Decode(m.Payload, &s) == nil {
			statuses <- s
		}
	}, proto.DefaultTopics.NodeStatus("n1"))
	return br, statuses, stop
}

// listen connects a test client (id) to br, subscribed to filters.
func listen(t *testing.T, br *testbroker.Broker, id string, onMessage func(bus.Message), filters ...string) *bus.Client {
	t.Helper()
	return bustest.Dial(t, br.URL(), id, onMessage, bus.Config{}, filters...)
}

// publishDesired publishes a signed Desired of toplevel for n1.
func publishDesired(t *testing.T, br *testbroker.Broker, key proto.PrivateKey, rollout, toplevel string) {
	t.Helper()
	dsr := &proto.Desired{Node: "n1", Rollout: rollout, Gen: uint64(time.Now().UnixMilli()), Toplevel: toplevel, Action: proto.ActionSwitch}
	dsr.Stamp("test", time.Now())
	if err := proto.Sign(dsr, key); err != nil {
		t.Fatal(err)
	}
	b, err := proto.Seal(dsr)
	if err != nil {
		t.Fatal(err)
	}
	if err := br.Server.Publish(proto.DefaultTopics.NodeDesired("n1"), b, true, 1); err != nil {
		t.Fatal(err)
	}
}

func awaitExec(t *testing.T, statuses chan proto.NodeStatus, rollout string, within time.Duration) proto.NodeStatus {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case s := <-statuses:
			if s.Execution.Rollout == rollout && s.Execution.State.Terminal() {
				return s
			}
		case <-deadline:
			t.Fatalf("no terminal state for %s within %s", rollout, within)
		}
	}
}

// What keeps the switch from starting is found before the profile moves
// (CheckActivation): failed, nothing was changed. And if the start fails
// anyway, after the profile moved, the switch did not run: the profile
// goes back and the execution only failed — it is not rolled back, and
// never rollback-failed.
func TestActivationThatCannotStartChangesNothing(t *testing.T) {
	key, err := proto.GenerateKey("test")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		set       func(*nixsystest.Fake)
		wantCalls []string
		wantError string
	}{
		{"check fails", func(f *nixsystest.Fake) {
			f.CheckErr = errors.New("activation run directory: mkdir x: not a directory")
		},
			[]string{"realise " + tlNew, "check switch " + tlNew}, "not a directory"},
		{"start fails after the check", func(f *nixsystest.Fake) { f.StartErr = errors.New("systemd-run: exit status 1") },
			[]string{"realise " + tlNew, "check switch " + tlNew, "set-profile " + tlNew, "activate switch " + tlNew, "set-profile " + tlOld}, "systemd-run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := nixsystest.New()
			tc.set(fake)
			br, statuses := testNode(t, fake, key, nil)
			publishDesired(t, br, key, "r-1", tlNew)
			s := awaitExec(t, statuses, "r-1", 10*time.Second)
			if s.Execution.State != proto.StateFailed || !strings.Contains(s.Execution.Error, "nothing was changed") || !strings.Contains(s.Execution.Error, tc.wantError) {
				t.Errorf("execution %s %q, want failed, nothing was changed, %s", s.Execution.State, s.Execution.Error, tc.wantError)
			}
			var calls []string
			for _, c := range fake.Calls() {
				if !strings.HasPrefix(c, "resume ") {
					calls = append(calls, c)
				}
			}
			if !slices.Equal(calls, tc.wantCalls) {
				t.Errorf("calls %q, want %q", calls, tc.wantCalls)
			}
			if cur, _ := fake.Current(); cur != tlOld {
				t.Errorf("profile on %s, want the old system", cur)
			}
		})
	}
}

// labd stopped after it moved the profile and before it recorded the
// activation; restarted, it finds the activation cannot start: the
// profile goes back to the recorded previous system and the execution
// only failed.
func TestResumedActivationThatCannotStartSetsTheProfileBack(t *testing.T) {
	key, err := proto.GenerateKey("test")
	if err != nil {
		t.Fatal(err)
	}
	fake := nixsystest.New()
	fake.CheckErr = errors.New("activation run directory: mkdir x: not a directory")
	d := desired(uint64(time.Now().UnixMilli()), 0, proto.ActionSwitch)
	_, statuses := testNode(t, fake, key, func(stateDir string) {
		fake.SetCurrent(tlNew) // the profile had moved
		s := at(proto.StateActivating, d)
		if err := os.MkdirAll(stateDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := saveState(stateDir, s); err != nil {
			t.Fatal(err)
		}
	})
	s := awaitExec(t, statuses, d.Rollout, 10*time.Second)
	if s.Execution.State != proto.StateFailed || !strings.Contains(s.Execution.Error, "profile is back on the previous system") {
		t.Errorf("execution %s %q, want failed with the profile set back", s.Execution.State, s.Execution.Error)
	}
	if cur, _ := fake.Current(); cur != tlOld {
		t.Errorf("profile on %s, want the old system", cur)
	}
}
