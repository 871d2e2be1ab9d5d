package node

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/node/nixsys/nixsystest"
	"github.com/lab-fleet/lab/proto"
)

// secretWaitEnv is labd on a fake Nix whose tlNew declares the secret
// db-password (etc/lab/secrets.json), with a Desired of tlNew published.
func secretWaitEnv(t *testing.T, fetchTimeout time.Duration) (e *secretEnv, fake *nixsystest.Fake, recipient string) {
	t.Helper()
	fake = nixsystest.New()
	fake.SetCurrent(tlOld)
	fake.SetSystemFile(tlNew, declaredSecretsFile, []byte(`{"db-password":{"mode":"0440","restart_units":["app.service"]}}`))
	e = newSecretEnvWith(t, fake, func(c *Config) { c.FetchTimeout = fetchTimeout })
	recipient = e.recipient()
	publishDesired(t, e.br, e.key, "r-1", tlNew)
	s := e.status("fetching, waiting for db-password", func(s proto.NodeStatus) bool {
		return s.Execution.Rollout == "r-1" && s.Execution.State == proto.StateFetching && s.Execution.Error == "waiting for secret db-password"
	})
	if len(s.Secrets) != 0 {
		t.Fatalf("secrets %+v before any was set", s.Secrets)
	}
	e.event("r-1", proto.StateFetching, "waiting for secret db-password")
	for _, c := range fake.Calls() {
		if strings.HasPrefix(c, "set-profile") || strings.HasPrefix(c, "activate") || strings.HasPrefix(c, "check") {
			t.Fatalf("%q while waiting for a secret: calls %v", c, fake.Calls())
		}
	}
	return e, fake, recipient
}

// event waits for an event of rollout in state st whose detail contains want.
func (e *secretEnv) event(rollout string, st proto.ExecState, want string) proto.Event {
	e.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-e.events:
			if ev.Rollout == rollout && ev.State == st && strings.Contains(ev.Detail, want) {
				return ev
			}
		case <-deadline:
			e.t.Fatalf("no %s event of %s saying %q within 5s", st, rollout, want)
		}
	}
}

// A Desired whose system declares db-password waits for it, fetching,
// saying so; the secret arrives, and the rollout goes on and succeeds.
func TestRolloutWaitsForDeclaredSecret(t *testing.T) {
	e, fake, rcpt := secretWaitEnv(t, time.Minute)
	s := e.secret(100, "db-plaintext-51d2", rcpt)
	s.Name = "db-password"
	e.publish(s, &e.key)
	st := e.status("r-1 succeeded", func(s proto.NodeStatus) bool {
		return s.Execution.Rollout == "r-1" && s.Execution.State.Terminal()
	})
	if st.Execution.State != proto.StateSucceeded {
		t.Fatalf("r-1 %s: %s", st.Execution.State, st.Execution.Error)
	}
	if !slices.Contains(fake.Calls(), "activate switch "+tlNew) {
		t.Errorf("calls %v: no activation of the new system", fake.Calls())
	}
	e.mustHold(e.dir+"/db-password", "db-plaintext-51d2")
}

// labd restarts while the rollout waits: it waits again (the same
// Desired, retained, is not a new one), and goes on when the secret comes.
func TestRolloutWaitingForSecretSurvivesRestart(t *testing.T) {
	e, fake, rcpt := secretWaitEnv(t, time.Minute)
	e.stop()
	for drained := false; !drained; { // only what the restarted labd says counts
		select {
		case <-e.statuses:
		default:
			drained = true
		}
	}
	e.start()
	e.status("fetching again, waiting for db-password", func(s proto.NodeStatus) bool {
		return s.Execution.Rollout == "r-1" && s.Execution.State == proto.StateFetching && s.Execution.Error == "waiting for secret db-password"
	})
	s := e.secret(100, "db-plaintext-83f0", rcpt)
	s.Name = "db-password"
	e.publish(s, &e.key)
	st := e.status("r-1 over", func(s proto.NodeStatus) bool {
		return s.Execution.Rollout == "r-1" && s.Execution.State.Terminal()
	})
	if st.Execution.State != proto.StateSucceeded {
		t.Fatalf("r-1 %s: %s", st.Execution.State, st.Execution.Error)
	}
	if n := strings.Count(strings.Join(fake.Calls(), "\n"), "activate switch "+tlNew); n != 1 {
		t.Errorf("activated %d times, want once: %v", n, fake.Calls())
	}
}

// It never arrives: timed out at the fetch deadline, naming it, and
// nothing was changed.
func TestRolloutTimesOutWithoutDeclaredSecret(t *testing.T) {
	e, fake, _ := secretWaitEnv(t, 2*time.Second)
	st := e.status("r-1 over", func(s proto.NodeStatus) bool {
		return s.Execution.Rollout == "r-1" && s.Execution.State.Terminal()
	})
	if st.Execution.State != proto.StateTimedOut || !strings.Contains(st.Execution.Error, "secret db-password never arrived") {
		t.Fatalf("r-1 %s: %q, want timed-out: secret db-password never arrived", st.Execution.State, st.Execution.Error)
	}
	e.event("r-1", proto.StateTimedOut, "secret db-password never arrived")
	if cur, _ := fake.Current(); cur != tlOld {
		t.Errorf("profile at %s, want it left at the old system", cur)
	}
}

// A system whose declaration is malformed fails before anything moves.
func TestRolloutWithMalformedSecretDeclarationFails(t *testing.T) {
	fake := nixsystest.New()
	fake.SetCurrent(tlOld)
	fake.SetSystemFile(tlNew, declaredSecretsFile, []byte(`{"db-password":`))
	e := newSecretEnvWith(t, fake, nil)
	publishDesired(t, e.br, e.key, "r-1", tlNew)
	st := e.status("r-1 over", func(s proto.NodeStatus) bool {
		return s.Execution.Rollout == "r-1" && s.Execution.State.Terminal()
	})
	if st.Execution.State != proto.StateFailed || !strings.Contains(st.Execution.Error, "etc/lab/secrets.json") {
		t.Fatalf("r-1 %s: %q, want failed naming etc/lab/secrets.json", st.Execution.State, st.Execution.Error)
	}
	if cur, _ := fake.Current(); cur != tlOld {
		t.Errorf("profile at %s, want it left at the old system", cur)
	}
}
