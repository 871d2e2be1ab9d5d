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
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
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
	dir := t.TempDir()
	d, err := New(Config{Name: "n1", Broker: []string{br.URL()}, StateDir: filepath.Join(dir, "state"),
		BootIDFile: filepath.Join(dir, "boot_id"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nixsystest.New())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	tp := proto.DefaultTopics
	online := make(chan bool, 100)
	watch, err := bus.Dial(context.Background(), bus.Config{URLs: []string{br.URL()}, ClientID: "watch", CleanStart: true,
		OnMessage: func(m bus.Message) {
			var p proto.Presence
			if proto.Decode(m.Payload, &p) == nil {
				online <- p.Online
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = watch.Close(context.Background()) })
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := watch.AwaitConnection(wctx); err != nil {
		t.Fatal(err)
	}
	if err := watch.Subscribe(wctx, tp.NodePresence("n1")); err != nil {
		t.Fatal(err)
	}
	awaitPresence := func(want bool, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case got := <-online:
				if got == want {
					return
				}
			case <-deadline:
				t.Fatalf("no presence online=%v within %s", want, within)
			}
		}
	}
	awaitPresence(true, 10*time.Second)
	time.Sleep(500 * time.Millisecond) // the retained copy and the live one
	for len(online) > 0 {
		<-online
	}
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
	if err := watch.Publish(wctx, tp.NodePresence("n1"), off, true); err != nil {
		t.Fatal(err)
	}
	awaitPresence(false, 5*time.Second)
	awaitPresence(true, 2*takeoverSettle)
}

// testNode runs a daemon named n1 on fake Nix (installed with tlOld)
// against a test broker, pinning key; statuses gets every status it
// publishes. prepare, if not nil, runs on the state directory first.
func testNode(t *testing.T, fake *nixsystest.Fake, key proto.PrivateKey, prepare func(stateDir string)) (br *testbroker.Broker, statuses chan proto.NodeStatus) {
	t.Helper()
	br = testbroker.Start(t)
	dir := t.TempDir()
	fake.SetCurrent(tlOld)
	if prepare != nil {
		prepare(filepath.Join(dir, "state"))
	}
	d, err := New(Config{Name: "n1", Broker: []string{br.URL()}, StateDir: filepath.Join(dir, "state"), TrustedKeys: []string{key.Public().String()},
		BootIDFile: filepath.Join(dir, "boot_id"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, fake)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	statuses = make(chan proto.NodeStatus, 100)
	c, err := bus.Dial(context.Background(), bus.Config{URLs: []string{br.URL()}, ClientID: "ctl", CleanStart: true,
		OnMessage: func(m bus.Message) {
			var s proto.NodeStatus
			if proto.Decode(m.Payload, &s) == nil {
				statuses <- s
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := c.AwaitConnection(wctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(wctx, proto.DefaultTopics.NodeStatus("n1")); err != nil {
		t.Fatal(err)
	}
	return br, statuses
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
