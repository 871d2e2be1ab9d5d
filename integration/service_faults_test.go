package integration

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/proto"
)

// stopController ends the controller service without a word (SIGKILL):
// with the embedded broker, the broker's process, which holds it.
func (e *Env) stopController() {
	e.t.Helper()
	if externalBroker() != "mosquitto" {
		e.killBroker()
		return
	}
	e.mu.Lock()
	cmd := e.controller
	e.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
}

// startControllerAgain starts the service stopped by stopController.
func (e *Env) startControllerAgain() {
	e.t.Helper()
	if externalBroker() != "mosquitto" {
		e.StartBroker()
		return
	}
	e.startController()
}

// The controller's host is replaced mid-rollout: its data directory,
// rollouts and key, is gone. The new controller finds the rollout it no
// longer knows in the retained rollout state and halts it with a reason a
// person can act on: the target activating finishes, the targets of the
// waves that never opened switch nothing, and publishing the rollout
// again finishes the job — no target switches twice.
func TestServiceHostReplacedHaltsWhatItLost(t *testing.T) {
	slow := []string{"--arg", "sleepSwitch", "3"}
	f := newServiceFleet(t, []string{"n1", "n2", "n3"}, map[string][]string{"n1": slow, "n2": slow, "n3": slow})
	f.startAll()
	f.nodes[2].Stop() // n3 sleeps through it
	eventually(t, 15*time.Second, "n3 offline", func() bool { return !f.Watch().Online("n3") })
	code, so, se := f.Labctl(f.publishArgs("r-lost", "--strategy", "rolling", "--batch", "1", "--detach")...)
	if code != 0 {
		t.Fatalf("publish --detach: exit %d\n%s%s", code, so, se)
	}
	f.Watch().AwaitState(t, "n1", "r-lost", proto.StateActivating, 60*time.Second)
	f.stopController()
	if err := os.RemoveAll(f.controllerDir()); err != nil {
		t.Fatal(err)
	}
	f.startControllerAgain()

	f.Watch().AwaitState(t, "n1", "r-lost", proto.StateSucceeded, 60*time.Second)
	var rs proto.RolloutState
	eventually(t, 30*time.Second, "r-lost halted by the new controller", func() bool {
		got, ok := f.Watch().Rollout("r-lost")
		rs = got
		return ok && rs.State == proto.RolloutCancelled && rs.Halted
	})
	if !strings.Contains(rs.Reason, "lost its records") || !strings.Contains(rs.Reason, "publish the rollout again") {
		t.Errorf("the halt reason does not say what happened and what to do: %q", rs.Reason)
	}
	// n3 wakes. Its retained Desired was cleared, but its session kept
	// the copy queued while it slept (MQTT QoS 1), and the new
	// controller's key, which it does not pin, cannot cancel it: it
	// waits for a wave that never opens — and switches nothing. n2, in
	// a wave that never opened, the same.
	f.startNodes(f.nodes[2:])
	time.Sleep(3 * time.Second)
	for _, n := range f.nodes[1:] {
		st, _ := f.Watch().Status(n.Name)
		if len(n.Switches()) != 0 || (st.Execution.Rollout == "r-lost" && st.Execution.State != proto.StateQueued && st.Execution.State != proto.StateCancelled) {
			t.Errorf("%s went on with the halted rollout: %+v", n.Name, st.Execution)
		}
	}
	// What the reason says to do works: the new controller (new key,
	// which the nodes do not pin) takes a one-wave rollout, which needs
	// no gate.
	code, so, se = f.Labctl(f.publishArgs("r-again", "--timeout", "90s")...)
	if code != exitSucceeded {
		t.Fatalf("publish again: exit %d\n%s%s", code, so, se)
	}
	for _, n := range f.nodes {
		if n.Current() != f.gen2[n.Name] {
			t.Errorf("%s runs %s, want %s", n.Name, n.Current(), f.gen2[n.Name])
		}
		if c := switched(n, "switch", f.gen2[n.Name]); c != 1 {
			t.Errorf("%s switched %d times", n.Name, c)
		}
	}
}

// Broker and controller go down together (a power cut of their host)
// while every node sleeps, with a rolling rollout submitted: they come
// back on their data, and when the nodes wake the rollout converges and
// its record says succeeded.
func TestServiceBrokerAndControllerRestartWhileNodesSleep(t *testing.T) {
	f := newServiceFleet(t, []string{"n1", "n2", "n3"}, nil)
	f.startAll()
	for _, n := range f.nodes {
		n.Stop()
	}
	for _, n := range f.nodes {
		eventually(t, 15*time.Second, n.Name+" offline", func() bool { return !f.Watch().Online(n.Name) })
	}
	code, so, se := f.Labctl(f.publishArgs("r-dark", "--strategy", "rolling", "--batch", "1", "--detach")...)
	if code != 0 {
		t.Fatalf("publish --detach: exit %d\n%s%s", code, so, se)
	}
	time.Sleep(time.Second) // a moment for the brokers' stores to save what they were given
	f.stopController()
	if externalBroker() == "mosquitto" {
		f.killBroker()
	}
	time.Sleep(500 * time.Millisecond)
	if externalBroker() == "mosquitto" {
		f.StartBroker()
	}
	f.startControllerAgain()
	f.startNodes(f.nodes)
	for _, n := range f.nodes {
		f.Watch().AwaitState(t, n.Name, "r-dark", proto.StateSucceeded, 90*time.Second)
		if c := switched(n, "switch", f.gen2[n.Name]); c != 1 {
			t.Errorf("%s switched %d times", n.Name, c)
		}
	}
	eventually(t, 30*time.Second, "the record says succeeded", func() bool {
		code, so, _ := f.Labctl("rollout", "show", "r-dark")
		return code == 0 && strings.Contains(so, "r-dark: succeeded")
	})
}

// A viewer and a node may not submit: the broker refuses their requests
// (0x87, not authorized) before any controller sees them, labctl publish
// as the viewer says which identity it needs, and nothing is recorded or
// reaches a node. The same against mosquitto with the exported rules
// (labctl controller runs there as the controller identity).
func TestServiceRefusesViewersAndNodes(t *testing.T) {
	mosquitto := externalBroker() == "mosquitto"
	sf := newSecureFleet(t, mosquitto)
	sf.service = true
	if mosquitto {
		sf.controllerEnv = []string{"LAB_USERNAME=ops", "LAB_PASSWORD_FILE=" + sf.pw["ops"]}
		sf.startController()
	}
	sf.startAll()
	eventually(t, 30*time.Second, "the controller service answers ops", func() bool {
		code, _, _ := sf.labctlAs("ops", "rollout", "list")
		return code == 0
	})
	tp := proto.DefaultTopics
	sub := &controller.Submission{Plan: controller.Plan{ID: "r-sneak", Targets: map[string]string{"n1": sf.gen2["n1"]}}}
	body, err := controller.EncodeRequest(&controller.Request{V: controller.APIVersion, Submission: sub})
	if err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"grafana", "n1"} {
		clientID := who + "-probe"
		if who == "n1" {
			sf.nodes[0].Stop() // its client id is its own: take it over
			clientID = "n1"
		}
		c, err := sf.as(t, who, sf.password(t, who), clientID)
		if err != nil {
			t.Fatalf("%s cannot connect: %v", who, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = c.PublishMessage(ctx, bus.Message{Topic: tp.CtlRequest(controller.VerbSubmit), Payload: body,
			ResponseTopic: tp.CtlResponse(clientID, "1"), Correlation: []byte("1")})
		cancel()
		if err == nil {
			t.Errorf("the broker took a submission from %s", who)
		} else if !errors.Is(err, bus.ErrNotAuthorized) {
			t.Errorf("%s's submission: %v, want the broker's not authorized", who, err)
		}
		_ = c.Close(context.Background())
	}
	sf.startNodes(sf.nodes[:1])
	code, so, se := sf.labctlAs("grafana", "publish", "--id", "r-viewer", "--key", sf.KeyFile, "--toplevel", "n1="+sf.gen2["n1"], "--detach")
	if code == 0 || !strings.Contains(se, "needs a controller identity") {
		t.Errorf("publish as the viewer: exit %d, want a refusal naming the identity it needs\n%s%s", code, so, se)
	}
	code, so, se = sf.labctlAs("ops", "rollout", "list", "--json")
	if code != 0 || strings.Contains(so, "r-sneak") || strings.Contains(so, "r-viewer") {
		t.Errorf("rollout list: exit %d, a refused submission recorded?\n%s%s", code, so, se)
	}
	if sf.nodes[0].Current() != sf.gen1["n1"] || len(sf.nodes[0].Switches()) != 0 {
		t.Errorf("n1 moved: %s", sf.nodes[0].Current())
	}
}
