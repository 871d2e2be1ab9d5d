package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/proto"
)

// secureFleet is a fleet whose broker has an identities file: nodes n1
// (web) and n2 (db), a controller "ops", a viewer "grafana".
type secureFleet struct {
	*fleet
	identities string
	pw         map[string]string // name → password file
	mosquitto  bool              // the broker is mosquitto with the exported rules
}

func newSecureFleet(t *testing.T, mosquitto bool, brokerArgs ...string) *secureFleet {
	e := NewEnv(t)
	sf := &secureFleet{identities: filepath.Join(e.Dir, "identities.yaml"), pw: map[string]string{}, mosquitto: mosquitto}
	// n3 is a node identity whose credentials were stolen: no labd runs as n3.
	for _, id := range []struct{ name, role, groups string }{{"n1", "node", "web"}, {"n2", "node", "db"}, {"n3", "node", "db"}, {"ops", "controller", ""}, {"grafana", "viewer", ""}} {
		args := []string{"node", "add", id.name, "--role", id.role, "--identities", sf.identities, "--out", e.Dir}
		if id.groups != "" {
			args = append(args, "--groups", id.groups)
		}
		if code, out, errOut := e.Labctl(args...); code != 0 {
			t.Fatalf("node add %s: exit %d\n%s%s", id.name, code, out, errOut)
		}
		sf.pw[id.name] = filepath.Join(e.Dir, id.name+".password")
	}
	if mosquitto {
		sf.startMosquitto(t, e)
	} else {
		e.startBrokerArgs(append([]string{"--identities", sf.identities}, brokerArgs...)...)
	}
	e.watch = newWatcher(t, e.BrokerURL(), "ops", sf.password(t, "ops"))
	f := &fleet{Env: e, gen1: map[string]string{}, gen2: map[string]string{}}
	for _, name := range []string{"n1", "n2"} {
		f.gen1[name] = e.Build(name, 1)
		f.gen2[name] = e.Build(name, 2)
		n := e.NewNode(name, []string{map[string]string{"n1": "web", "n2": "db"}[name]}, f.gen1[name])
		n.appendConfig(fmt.Sprintf("password_file: %q\n", sf.pw[name]))
		f.nodes = append(f.nodes, n)
	}
	e.DumpOnFailure(f.nodes...)
	sf.fleet = f
	return sf
}

func (sf *secureFleet) password(t *testing.T, name string) string {
	b, err := os.ReadFile(sf.pw[name])
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// startBrokerArgs is StartBroker with extra labctl broker flags.
func (e *Env) startBrokerArgs(extra ...string) {
	e.t.Helper()
	args := []string{"broker", "--listen", fmt.Sprintf("127.0.0.1:%d", e.Port), "--data-dir", filepath.Join(e.Dir, "broker-data")}
	e.runBroker(bin.labctl, append(append(args, e.brokerArgs...), extra...)...)
}

// runBroker starts a broker process logging to broker.log, stops it at
// the end of the test, and waits until it accepts connections.
func (e *Env) runBroker(name string, args ...string) {
	e.t.Helper()
	logf, err := os.OpenFile(filepath.Join(e.Dir, "broker.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.broker = cmd
	e.mu.Unlock()
	e.t.Cleanup(func() { stopProcess(cmd); logf.Close() })
	waitPort(e.t, e.Port)
}

// startMosquitto runs mosquitto with the rules `labctl acl export` writes.
func (sf *secureFleet) startMosquitto(t *testing.T, e *Env) {
	t.Helper()
	requireTools(t, "mosquitto")
	dir := filepath.Join(e.Dir, "mosquitto")
	if code, out, errOut := e.Labctl("acl", "export", "--format", "mosquitto", "--identities", sf.identities, "--passwords", e.Dir, "--out", dir); code != 0 {
		t.Fatalf("acl export: exit %d\n%s%s", code, out, errOut)
	}
	conf := fmt.Sprintf("user root\nper_listener_settings false\nlistener %d 127.0.0.1\nallow_anonymous false\npassword_file %s\nacl_file %s\npersistence true\npersistence_location %s/\n",
		e.Port, filepath.Join(dir, "passwd"), filepath.Join(dir, "acl"), dir)
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	e.runBroker("mosquitto", "-c", filepath.Join(dir, "mosquitto.conf"))
}

// as connects a client with an identity's credentials (pass "" for none);
// messages it receives go to the returned channel. It waits up to 15 s:
// every login costs the broker a bcrypt verification (issue 16), so under
// -race with refused clients retrying a good login can take seconds.
func (sf *secureFleet) as(t *testing.T, user, password, clientID string) (*bus.Client, error) {
	c, _, err := sf.asWithInbox(t, user, password, clientID)
	return c, err
}

// refused tries to connect with credentials the broker must refuse: it
// reports the connection error (nil: it was let in) after 2 s, and closes
// the client at once so that its retries stop loading the broker.
func (sf *secureFleet) refused(t *testing.T, user, password, clientID string) error {
	t.Helper()
	c, _, err := sf.dialAs(t, user, password, clientID, 2*time.Second)
	_ = c.Close(context.Background())
	return err
}

func (sf *secureFleet) asWithInbox(t *testing.T, user, password, clientID string) (*bus.Client, chan bus.Message, error) {
	t.Helper()
	return sf.dialAs(t, user, password, clientID, 15*time.Second)
}

func (sf *secureFleet) dialAs(t *testing.T, user, password, clientID string, wait time.Duration) (*bus.Client, chan bus.Message, error) {
	t.Helper()
	inbox := make(chan bus.Message, 64)
	c, err := bus.Dial(context.Background(), bus.Config{URLs: []string{sf.BrokerURL()}, ClientID: clientID, Username: user, Password: []byte(password), CleanStart: true,
		OnMessage: func(m bus.Message) {
			select {
			case inbox <- m:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return c, inbox, c.AwaitConnection(ctx)
}

func TestBrokerRefusesWhatIdentitiesDoNotAllow(t *testing.T) { breakIn(t, false) }

// The same cases against mosquitto configured with `labctl acl export`:
// the path to an external (clustered) broker keeps the same rules.
func TestMosquittoWithExportedRulesRefusesTheSame(t *testing.T) { breakIn(t, true) }

func breakIn(t *testing.T, mosquitto bool) {
	sf := newSecureFleet(t, mosquitto)
	sf.startAll()
	ctx := context.Background()
	// Who may not connect at all.
	cases := []struct{ user, pass, client string }{{"n1", "wrong", "n1-x"}, {"nobody", "x", "nobody"}, {"", "", "anon"}}
	if !mosquitto { // mosquitto cannot bind client ids to usernames without use_username_as_clientid
		cases = append(cases, struct{ user, pass, client string }{"n1", sf.password(t, "n1"), "n2"},
			struct{ user, pass, client string }{"ops", sf.password(t, "ops"), "n1"}) // a node's session is the node's
		// A controller (or viewer) may pick any client id that is no
		// other identity's, as MQTT Explorer or Home Assistant do.
		if c, err := sf.as(t, "ops", sf.password(t, "ops"), "mqtt-explorer-1a2b"); err != nil {
			t.Errorf("ops with a client id of its own choosing: %v", err)
		} else {
			_ = c.Close(ctx)
		}
	}
	for _, c := range cases {
		if err := sf.refused(t, c.user, c.pass, c.client); err == nil {
			t.Errorf("%q (client %q) connected", c.user, c.client)
		}
	}
	// A stolen node credential (n3's) is confined to n3's own topics.
	node, nodeInbox, err := sf.asWithInbox(t, "n3", sf.password(t, "n3"), "n3")
	if err != nil {
		t.Fatalf("n3 cannot connect: %v", err)
	}
	ops, err := sf.as(t, "ops", sf.password(t, "ops"), "ops-probe")
	if err != nil {
		t.Fatalf("ops cannot connect: %v", err)
	}
	tp := proto.DefaultTopics
	// A refused subscription either fails (the embedded broker) or is
	// granted but delivers nothing (mosquitto filters at delivery): either
	// way, a message the controller publishes there must not arrive.
	refusedSub := func(c *bus.Client, inbox chan bus.Message, who, filter, topic string) {
		if err := c.Subscribe(ctx, filter); err != nil {
			return
		}
		if err := ops.Publish(ctx, topic, []byte("probe"), false); err != nil {
			t.Fatalf("controller publish %s: %v", topic, err)
		}
		deadline := time.After(1500 * time.Millisecond)
		for {
			select {
			case m := <-inbox:
				if m.Topic == topic {
					t.Errorf("%s received %s through %s", who, topic, filter)
					return
				}
			case <-deadline:
				return
			}
		}
	}
	refusedPub := func(c *bus.Client, who, topic string) {
		if err := c.Publish(ctx, topic, []byte("x"), false); err == nil {
			t.Errorf("%s published to %s", who, topic)
		}
	}
	refusedSub(node, nodeInbox, "n3", tp.NodeDesired("n1"), tp.NodeDesired("n1"))
	refusedSub(node, nodeInbox, "n3", tp.AllDesired(), tp.NodeDesired("n1"))
	refusedSub(node, nodeInbox, "n3", tp.GroupGate("web"), tp.GroupGate("web"))
	refusedPub(node, "n3", tp.NodeStatus("n1"))
	refusedPub(node, "n3", tp.NodePresence("n1"))
	refusedPub(node, "n3", tp.NodeDesired("n3"))
	refusedPub(node, "n3", tp.GroupGate("db"))
	refusedPub(node, "n3", tp.AllCmd())
	viewer, viewerInbox, err := sf.asWithInbox(t, "grafana", sf.password(t, "grafana"), "grafana")
	if err != nil {
		t.Fatalf("viewer cannot connect: %v", err)
	}
	refusedPub(viewer, "grafana", tp.NodeStatus("n1"))
	refusedPub(viewer, "grafana", tp.NodeDesired("n1"))
	refusedSub(viewer, viewerInbox, "grafana", tp.AllDesired(), tp.NodeDesired("n2"))
	if err := viewer.Subscribe(ctx, tp.AllStatus(), tp.AllPresence()); err != nil {
		t.Errorf("viewer cannot read status: %v", err)
	}
	// What is allowed still works end to end: a signed rollout by the
	// controller identity, to nodes with their own credentials.
	code, out, errOut := sf.labctlAs("ops", "publish", "--id", "r-acl", "--key", sf.KeyFile,
		"--toplevel", "n1="+sf.gen2["n1"], "--toplevel", "n2="+sf.gen2["n2"], "--timeout", "60s")
	if code != exitSucceeded {
		t.Fatalf("publish as ops: exit %d\n%s%s", code, out, errOut)
	}
	for _, n := range []string{"n1", "n2"} {
		sf.Watch().AwaitState(t, n, "r-acl", proto.StateSucceeded, 10*time.Second)
	}
	if mosquitto {
		return // mosquitto reloads its files on SIGHUP, not on change
	}
	// A new identity is picked up by the running broker without a restart.
	if code, out, errOut := sf.Labctl("node", "add", "n3", "--groups", "web", "--identities", sf.identities, "--out", sf.Dir); code != 0 {
		t.Fatalf("node add n3: exit %d\n%s%s", code, out, errOut)
	}
	sf.pw["n3"] = filepath.Join(sf.Dir, "n3.password")
	eventually(t, 15*time.Second, "n3 accepted after the identities file changed", func() bool {
		_, err := sf.as(t, "n3", sf.password(t, "n3"), "n3")
		return err == nil
	})
}

// labctlAs runs labctl with an identity's credentials.
func (sf *secureFleet) labctlAs(user string, args ...string) (int, string, string) {
	sf.t.Helper()
	cmd := sf.command(bin.labctl, args...)
	cmd.Env = append(cmd.Env, "LAB_BROKER="+sf.BrokerURL(), "LAB_USERNAME="+user, "LAB_PASSWORD_FILE="+sf.pw[user])
	if !sf.service {
		cmd.Env = append(cmd.Env, "LAB_LOCAL_CONTROLLER=true") // as Labctl: the tests before the service drive rollouts themselves
	}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return exitCode(err), out.String(), errb.String()
}
