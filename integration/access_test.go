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
}

func newSecureFleet(t *testing.T) *secureFleet {
	e := NewEnv(t)
	sf := &secureFleet{identities: filepath.Join(e.Dir, "identities.yaml"), pw: map[string]string{}}
	for _, id := range []struct{ name, role, groups string }{{"n1", "node", "web"}, {"n2", "node", "db"}, {"ops", "controller", ""}, {"grafana", "viewer", ""}} {
		args := []string{"node", "add", id.name, "--role", id.role, "--identities", sf.identities, "--out", e.Dir}
		if id.groups != "" {
			args = append(args, "--groups", id.groups)
		}
		if code, out, errOut := e.Labctl(args...); code != 0 {
			t.Fatalf("node add %s: exit %d\n%s%s", id.name, code, out, errOut)
		}
		sf.pw[id.name] = filepath.Join(e.Dir, id.name+".password")
	}
	e.startBrokerArgs("--identities", sf.identities)
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
	logf, err := os.OpenFile(filepath.Join(e.Dir, "broker.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		e.t.Fatal(err)
	}
	args := append([]string{"broker", "--listen", fmt.Sprintf("127.0.0.1:%d", e.Port), "--data-dir", filepath.Join(e.Dir, "broker-data")}, extra...)
	cmd := exec.Command(bin.labctl, args...)
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

// as connects a client with an identity's credentials (pass "" for none).
func (sf *secureFleet) as(t *testing.T, user, password, clientID string) (*bus.Client, error) {
	t.Helper()
	c, err := bus.Dial(context.Background(), bus.Config{URLs: []string{sf.BrokerURL()}, ClientID: clientID, Username: user, Password: []byte(password), CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c, c.AwaitConnection(ctx)
}

func TestBrokerRefusesWhatIdentitiesDoNotAllow(t *testing.T) {
	sf := newSecureFleet(t)
	sf.startAll()
	ctx := context.Background()
	// Who may not connect at all.
	for _, c := range []struct{ user, pass, client string }{
		{"n1", "wrong", "n1-x"}, {"nobody", "x", "nobody"}, {"", "", "anon"},
		{"n1", sf.password(t, "n1"), "n2"}, // n1's password, n2's client id
	} {
		if _, err := sf.as(t, c.user, c.pass, c.client); err == nil {
			t.Errorf("%q (client %q) connected", c.user, c.client)
		}
	}
	// A stolen node credential (n2's) is confined to n2's own topics.
	node, err := sf.as(t, "n2", sf.password(t, "n2"), "n2")
	if err != nil {
		t.Fatalf("n2 cannot connect: %v", err)
	}
	tp := proto.DefaultTopics
	refusedSub := func(c *bus.Client, who, filter string) {
		if err := c.Subscribe(ctx, filter); err == nil {
			t.Errorf("%s subscribed to %s", who, filter)
		}
	}
	refusedPub := func(c *bus.Client, who, topic string) {
		if err := c.Publish(ctx, topic, []byte("x"), false); err == nil {
			t.Errorf("%s published to %s", who, topic)
		}
	}
	refusedSub(node, "n2", tp.NodeDesired("n1"))
	refusedSub(node, "n2", tp.AllDesired())
	refusedSub(node, "n2", tp.GroupGate("web"))
	refusedPub(node, "n2", tp.NodeStatus("n1"))
	refusedPub(node, "n2", tp.NodePresence("n1"))
	refusedPub(node, "n2", tp.NodeDesired("n2"))
	refusedPub(node, "n2", tp.GroupGate("db"))
	refusedPub(node, "n2", tp.AllCmd())
	viewer, err := sf.as(t, "grafana", sf.password(t, "grafana"), "grafana")
	if err != nil {
		t.Fatalf("viewer cannot connect: %v", err)
	}
	refusedPub(viewer, "grafana", tp.NodeStatus("n1"))
	refusedPub(viewer, "grafana", tp.NodeDesired("n1"))
	refusedSub(viewer, "grafana", tp.AllDesired())
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
	cmd.Env = append(cmd.Env, "LAB_BROKER_URL="+sf.BrokerURL(), "LAB_USERNAME="+user, "LAB_PASSWORD_FILE="+sf.pw[user])
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return exitCode(err), out.String(), errb.String()
}
