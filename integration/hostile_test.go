package integration

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// Hostile or broken messages on a node's topics are reported as rejected
// events with the reason and change nothing: the node stays on its system,
// keeps its applied gen, and still applies the next valid rollout.
func TestHostileMessagesAreRejected(t *testing.T) {
	f := newFleet(t, []string{"n1"}, nil)
	f.startAll()
	if code, _ := f.publish("r-good"); code != exitSucceeded {
		t.Fatalf("first rollout exit %d", code)
	}
	before := f.Watch().AwaitState(t, "n1", "r-good", proto.StateSucceeded, 10*time.Second)

	// With identities (the mosquitto pass) the attacker holds stolen
	// controller credentials, but not the operator's signing key.
	c, ctx := f.dialController("attacker")
	stranger, _ := proto.GenerateKey("stranger")
	signed := func(mod func(*proto.Desired), key *proto.PrivateKey) []byte {
		d := &proto.Desired{Node: "n1", Rollout: "r-evil", Gen: before.AppliedGen + 1000, Toplevel: f.gen1["n1"], Action: proto.ActionSwitch}
		d.Stamp("attacker", time.Now())
		d.V, d.Kind = proto.Version, proto.KindDesired // Encode, unlike Seal, does not fill them
		if mod != nil {
			mod(d)
		}
		if key != nil {
			if err := proto.Sign(d, *key); err != nil {
				t.Fatal(err)
			}
		}
		b, err := proto.Encode(d)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	old := &proto.Desired{Node: "n1", Rollout: "r-old", Gen: before.AppliedGen - 1, Toplevel: f.gen1["n1"], Action: proto.ActionSwitch}
	old.Stamp("labctl", time.Now())
	_ = proto.Sign(old, f.Key)
	oldRaw, _ := proto.Seal(old)
	desiredTopic := proto.DefaultTopics.NodeDesired("n1")
	cases := []struct {
		name, topic string
		payload     []byte
		reason      string
	}{
		{"garbage", desiredTopic, []byte("\xde\xad\xbe\xef not msgpack"), "malformed"},
		{"oversize", desiredTopic, bytes.Repeat([]byte{0x90}, proto.MaxSize(proto.KindDesired)+1), "too large"},
		{"invalid store path", desiredTopic, signed(func(d *proto.Desired) { d.Toplevel = "/tmp/evil" }, &f.Key), "toplevel"},
		{"another node's desired", desiredTopic, signed(func(d *proto.Desired) { d.Node = "n2" }, &f.Key), "addressed to node"},
		{"unsigned", desiredTopic, signed(nil, nil), "not signed"},
		{"signed by an unknown key", desiredTopic, signed(nil, &stranger), "unknown key"},
		{"forged signature", desiredTopic, signed(func(d *proto.Desired) { d.KeyID = f.Key.ID; d.Sig = bytes.Repeat([]byte{1}, 64) }, nil), "signature"},
		{"replayed older gen", desiredTopic, oldRaw, "replayed"},
		{"garbage gate", proto.DefaultTopics.GroupGate("web"), []byte{0xc1}, "gate"},
		{"unsigned gate", proto.DefaultTopics.GroupGate("web"), gateRaw(t, nil), "not signed"},
		{"gate signed by an unknown key", proto.DefaultTopics.GroupGate("web"), gateRaw(t, &stranger), "unknown key"},
		{"command signed by an unknown key", proto.DefaultTopics.NodeCmd("n1"), commandRaw(t, &stranger), "unknown key"},
		{"expired command", proto.DefaultTopics.NodeCmd("n1"), expiredCommand(t, f.Key), "expired"},
		{"garbage command", proto.DefaultTopics.NodeCmd("n1"), []byte("rm -rf /"), "command"},
	}
	for _, tc := range cases {
		n := len(f.Watch().Events("n1"))
		if err := c.Publish(ctx, tc.topic, tc.payload, false); err != nil {
			if tc.name == "oversize" && strings.Contains(err.Error(), "refused") {
				continue // the broker's packet limit stopped it first
			}
			t.Fatalf("%s: publish: %v", tc.name, err)
		}
		eventually(t, 10*time.Second, tc.name+" rejected", func() bool {
			for _, ev := range f.Watch().Events("n1")[n:] {
				if ev.State == proto.StateRejected {
					if !strings.Contains(strings.ToLower(ev.Detail), tc.reason) {
						t.Errorf("%s: reason %q does not mention %q", tc.name, ev.Detail, tc.reason)
					}
					return true
				}
			}
			return false
		})
	}
	after, _ := f.Watch().Status("n1")
	if after.AppliedGen != before.AppliedGen || after.Current != before.Current || after.Execution.Rollout != "r-good" {
		t.Fatalf("status changed: before %+v\nafter %+v", before.Execution, after.Execution)
	}
	if f.nodes[0].rebootRequested() {
		t.Fatal("a forged or expired command made the node reboot")
	}
	if f.nodes[0].Current() != f.gen2["n1"] || len(f.nodes[0].Switches()) != 1 {
		t.Fatalf("the node switched: %v", f.nodes[0].Switches())
	}
	// Still alive and obedient: a valid rollout back to gen 1 works.
	code, _, _ := f.Labctl("publish", "--id", "r-back", "--key", f.KeyFile, "--toplevel", "n1="+f.gen1["n1"])
	if code != exitSucceeded {
		t.Fatalf("valid rollout after the attack: exit %d", code)
	}
}

func gateRaw(t *testing.T, key *proto.PrivateKey) []byte {
	t.Helper()
	g := &proto.Gate{Group: "web", Rollout: "r-evil", OpenWave: 99, State: proto.GateRunning, Seq: uint64(time.Now().UnixMilli())}
	g.Stamp("attacker", time.Now())
	if key != nil {
		if err := proto.Sign(g, *key); err != nil {
			t.Fatal(err)
		}
	}
	b, err := proto.Seal(g)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func commandRaw(t *testing.T, key *proto.PrivateKey) []byte {
	t.Helper()
	c := &proto.Command{Op: proto.OpReboot, Targets: []string{"n1"}, Expires: time.Now().Add(time.Hour).UnixMilli()}
	c.Stamp("attacker", time.Now())
	if err := proto.Sign(c, *key); err != nil {
		t.Fatal(err)
	}
	b, err := proto.Seal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// expiredCommand is a reboot command properly signed, but expired.
func expiredCommand(t *testing.T, key proto.PrivateKey) []byte {
	t.Helper()
	c := &proto.Command{Op: proto.OpReboot, Targets: []string{"n1"}, Expires: time.Now().Add(-time.Minute).UnixMilli()}
	c.Stamp("labctl", time.Now())
	if err := proto.Sign(c, key); err != nil {
		t.Fatal(err)
	}
	b, err := proto.Seal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
