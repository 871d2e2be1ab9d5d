package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lab-fleet/lab/broker"
	"github.com/lab-fleet/lab/proto"
)

// secureBroker starts an in-process broker with an identities file holding
// the given name=role identities; it returns the broker's URL and the
// directory of their password files.
func secureBroker(t *testing.T, ids ...string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	identities := addIdentities(t, dir, ids...)
	s, err := broker.New(broker.Config{Listen: "127.0.0.1:0", Identities: identities, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return "mqtt://" + s.Addr(), dir
}

// TestRefusedSubscriptionNamesTheRole: the broker's 0x87 to an identity
// without the rights a command needs becomes which identity, what it may
// read and which role the command needs.
func TestRefusedSubscriptionNamesTheRole(t *testing.T) {
	clearBrokerEnv(t)
	url, dir := secureBroker(t, "grafana=viewer")
	as := func(user string, args ...string) []string {
		return append(args, "--broker", url, "--username", user, "--password-file", filepath.Join(dir, user+".password"))
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"viewer publishes", as("grafana", "publish", "--on", "n1", "--toplevel", "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x"),
			[]string{`identity "grafana" may not subscribe to lab/v1/node/+/desired`, "0x87, not authorized", "a viewer's rights",
				"labctl publish needs a controller identity", "--role controller"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := labctl(t, tc.args...)
			if code == 0 {
				t.Fatalf("exit 0; want a refusal\n%s", errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
}

// TestExplainRefusal reasons from the filter refused and those granted
// before it; other errors pass unchanged.
func TestExplainRefusal(t *testing.T) {
	tp := proto.DefaultTopics
	fleet := []string{tp.AllStatus(), tp.AllPresence(), tp.AllDesired(), tp.AllEvents()}
	statusOnly := []string{tp.AllStatus(), tp.AllPresence()}
	refused := func(filter string) error {
		return fmt.Errorf("bus: subscribe %s refused: reason 0x87: %w", filter, errBus)
	}
	for _, tc := range []struct {
		name, identity, command string
		subs                    []string
		err                     error
		want                    []string
	}{
		{"viewer", "grafana", "labctl rollout list", fleet, refused(tp.AllDesired()),
			[]string{`identity "grafana"`, "a viewer's rights", "labctl rollout list needs a controller identity"}},
		{"status refused", "n1", "labctl status", statusOnly, refused(tp.AllStatus()),
			[]string{`identity "n1" may not subscribe to lab/v1/node/+/status`, "neither a viewer's nor a controller's", "needs a viewer identity", "--role viewer"}},
		{"anonymous", "", "labctl publish", fleet, refused(tp.AllStatus()),
			[]string{"this connection (no username, no client certificate)", "needs a controller identity"}},
		{"desired first", "ops", "labctl x", []string{tp.AllDesired()}, refused(tp.AllDesired()),
			[]string{"it lacks a controller's rights", "needs a controller identity"}},
		{"other reason", "ops", "labctl publish", fleet, fmt.Errorf("bus: subscribe x refused: reason 0x97: %w", errBus),
			[]string{"bus: subscribe x refused: reason 0x97"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := explainRefusal(tc.err, tc.identity, tc.command, tp, tc.subs)
			if !errors.Is(err, errBus) {
				t.Errorf("%v does not wrap the bus's error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
}

var errBus = errors.New("at least one requested subscription failed")
