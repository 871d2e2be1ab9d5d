package integration

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// Two keys, two powers (DESIGN §9), with a real labd and the real broker:
// a node pinning the operator's key (trusted_keys) and the controller's
// (controller_keys) takes *what* to run only from the operator and *when*
// (gates) and reboots (commands) from the controller.
func TestTwoKeysTwoPowers(t *testing.T) {
	f := newFleet(t, []string{"n1"}, nil)
	n := f.nodes[0]
	ctl, err := proto.GenerateKey("ctl")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.OpenFile(n.Config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.WriteString("controller_keys: [\"" + ctl.Public().String() + "\"]\n"); err != nil {
		t.Fatal(err)
	}
	cfg.Close()
	f.startAll()
	c, ctx := f.dialController("controller")
	tp := proto.DefaultTopics
	publish := func(topic string, m proto.Signable, key proto.PrivateKey, retained bool) {
		t.Helper()
		if err := proto.Sign(m, key); err != nil {
			t.Fatal(err)
		}
		b, err := proto.Seal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Publish(ctx, topic, b, retained); err != nil {
			t.Fatal(err)
		}
	}
	desired := func(rollout string, gen uint64, wave int) *proto.Desired {
		d := &proto.Desired{Node: "n1", Rollout: rollout, Gen: gen, Toplevel: f.gen2["n1"], Action: proto.ActionSwitch, Wave: wave}
		d.Stamp("controller", time.Now())
		return d
	}

	// The controller's key cannot say what to run: its Desired is
	// rejected with the reason, and the profile does not move.
	publish(tp.NodeDesired("n1"), desired("r-ctl", 1, 0), ctl, true)
	const why = `desired: signed by controller key "ctl", which may sign gates and commands only: a Desired needs an operator key (trusted_keys)`
	eventually(t, 10*time.Second, "the controller-signed desired state rejected", func() bool {
		for _, ev := range f.Watch().Events("n1") {
			if ev.State == proto.StateRejected && ev.Rollout == "r-ctl" {
				if ev.Detail != why {
					t.Fatalf("rejected with %q, want %q", ev.Detail, why)
				}
				return true
			}
		}
		return false
	})
	time.Sleep(time.Second) // a node that (wrongly) acted would be fetching by now
	if s, _ := f.Watch().Status("n1"); s.Execution.Rollout == "r-ctl" || n.Current() != f.gen1["n1"] || len(n.Switches()) != 0 {
		t.Fatalf("the controller key moved the node: execution %+v, current %s, switches %v", s.Execution, n.Current(), n.Switches())
	}

	// The operator's Desired waits for wave 1; the controller's gate
	// opens it.
	publish(tp.NodeDesired("n1"), desired("r-wave", 2, 1), f.Key, true)
	f.Watch().AwaitState(t, "n1", "r-wave", proto.StateQueued, 20*time.Second)
	if n.Current() != f.gen1["n1"] {
		t.Fatalf("the node acted before its wave opened: current %s", n.Current())
	}
	g := &proto.Gate{Group: "web", Rollout: "r-wave", OpenWave: 1, State: proto.GateRunning, Seq: uint64(time.Now().UnixMilli())}
	g.Stamp("controller", time.Now())
	publish(tp.GroupGate("web"), g, ctl, true)
	f.Watch().AwaitState(t, "n1", "r-wave", proto.StateSucceeded, 60*time.Second)
	if n.Current() != f.gen2["n1"] {
		t.Fatalf("succeeded but current is %s, want %s", n.Current(), f.gen2["n1"])
	}

	// The controller's key may reboot the node.
	cmd := &proto.Command{Op: proto.OpReboot, Rollout: "r-wave", Targets: []string{"n1"}, Expires: time.Now().Add(time.Hour).UnixMilli()}
	cmd.Stamp("controller", time.Now())
	events := len(f.Watch().Events("n1"))
	publish(tp.NodeCmd("n1"), cmd, ctl, false)
	eventually(t, 10*time.Second, "the controller-signed reboot command run", n.rebootRequested)
	for _, ev := range f.Watch().Events("n1")[events:] {
		if ev.State == proto.StateRejected || strings.Contains(ev.Detail, "refused") {
			t.Errorf("event after the controller's reboot command: %+v", ev)
		}
	}
}
