package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/lab-fleet/lab/proto"
)

func sealed(t *testing.T, m proto.Message) []byte {
	t.Helper()
	m.Header().Stamp("test", time.Now())
	b, err := proto.Seal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mirrorOf is the copy of a message: its topic and payload.
func mirrorOf(topics proto.Topics, topic string, payload []byte) (string, []byte, bool) {
	out, m, ok := mirrorTopic(topics, topic)
	if !ok {
		return "", nil, false
	}
	b, ok := mirrorPayload(m, payload)
	return out, b, ok
}

func TestMirrorOf(t *testing.T) {
	tp := proto.DefaultTopics
	status := sealed(t, &proto.NodeStatus{Node: "n1", Groups: []string{"web"}, AppliedGen: 7})
	for _, c := range []struct {
		name, topic string
		payload     []byte
		want        string // mirrored topic; "" = not mirrored
		field       string // a JSON field the copy must have
	}{
		{"status", tp.NodeStatus("n1"), status, "lab/v1/json/node/n1/status", `"applied_gen":7`},
		{"presence", tp.NodePresence("n1"), sealed(t, &proto.Presence{Node: "n1", Online: true}), "lab/v1/json/node/n1/presence", `"online":true`},
		{"event", tp.NodeEvents("n1"), sealed(t, &proto.Event{Node: "n1", Rollout: "r1", Prev: proto.StateVerifying, State: proto.StateSucceeded}), "lab/v1/json/node/n1/events", `"rollout":"r1"`},
		{"rollout", tp.Rollout("r1"), sealed(t, &proto.RolloutState{Rollout: "r1", State: proto.RolloutRunning}), "lab/v1/json/rollout/r1", `"rollout":"r1"`},
		{"cleared", tp.NodeStatus("n1"), nil, "lab/v1/json/node/n1/status", ""},
		{"desired is not mirrored", tp.NodeDesired("n1"), status, "", ""},
		{"gate is not mirrored", tp.GroupGate("web"), status, "", ""},
		{"a secret is not mirrored", tp.NodeSecret("n1", "db"), status, "", ""},
		{"garbage", tp.NodeStatus("n1"), []byte("\x93garbage"), "", ""},
		{"a status on a presence topic", tp.NodePresence("n1"), status, "", ""},
		{"the mirror itself", "lab/v1/json/node/n1/status", []byte(`{}`), "", ""},
		{"another prefix", "other/node/n1/status", status, "", ""},
	} {
		topic, payload, ok := mirrorOf(tp, c.topic, c.payload)
		if c.want == "" {
			if ok {
				t.Errorf("%s: mirrored to %s", c.name, topic)
			}
			continue
		}
		if !ok || topic != c.want {
			t.Errorf("%s: mirrored %v to %q, want %q", c.name, ok, topic, c.want)
			continue
		}
		if c.payload == nil {
			if len(payload) != 0 {
				t.Errorf("%s: copy %q, want empty (cleared)", c.name, payload)
			}
			continue
		}
		var object map[string]any
		if err := json.Unmarshal(payload, &object); err != nil {
			t.Errorf("%s: copy is not a JSON object: %v: %s", c.name, err, payload)
		}
		if !strings.Contains(string(payload), c.field) {
			t.Errorf("%s: copy %s lacks %s", c.name, payload, c.field)
		}
	}
}

// TestJSONMirror: through the real broker, a node's retained status gets a
// retained JSON copy that a plain subscriber reads, a cleared status
// clears it, and a node's Last Will (presence offline) is mirrored too.
func TestJSONMirror(t *testing.T) {
	s := startServer(t, Config{})
	viewer := connect(t, s.Addr(), clientOpts{id: "viewer"})
	viewer.subscribe(t, "lab/v1/json/#")
	node := connect(t, s.Addr(), clientOpts{id: "n1"})
	publish := func(topic string, payload []byte, retain bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := node.cm.Publish(ctx, &paho.Publish{QoS: 1, Retain: retain, Topic: topic, Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	publish(proto.DefaultTopics.NodeStatus("n1"), sealed(t, &proto.NodeStatus{Node: "n1", AppliedGen: 42}), true)
	pk := viewer.next(t)
	var st proto.NodeStatus
	if pk.Topic != "lab/v1/json/node/n1/status" || json.Unmarshal(pk.Payload, &st) != nil || st.AppliedGen != 42 || st.Node != "n1" {
		t.Fatalf("viewer got %s %s, want the status as JSON", pk.Topic, pk.Payload)
	}
	if len(s.Mochi().Topics.Messages("lab/v1/json/node/n1/status")) != 1 {
		t.Fatal("the JSON copy is not retained")
	}
	// An event (not retained) reaches the viewer, who subscribes to it.
	publish(proto.DefaultTopics.NodeEvents("n1"), sealed(t, &proto.Event{Node: "n1", Rollout: "r1", Prev: proto.StateVerifying, State: proto.StateSucceeded}), false)
	pk = viewer.next(t)
	for pk.Topic == "lab/v1/json/node/n1/status" { // the copy once more: mochi sends retained messages after the SUBACK, so one that lands in between comes live and retained
		pk = viewer.next(t)
	}
	if pk.Topic != "lab/v1/json/node/n1/events" || !strings.Contains(string(pk.Payload), `"to_state":"succeeded"`) {
		t.Fatalf("viewer got %s %s, want the event as JSON", pk.Topic, pk.Payload)
	}
	publish(proto.DefaultTopics.NodeStatus("n1"), nil, true)
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if len(s.Mochi().Topics.Messages("lab/v1/json/node/n1/status")) != 0 {
			return errors.New("the JSON copy is still retained after the status was cleared")
		}
		return nil
	})

	// A node's connection dies: its Last Will says offline, in JSON too.
	// (A raw client: a library would reconnect and take its session over.)
	var b bytes.Buffer
	ck := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "n2",
			WillFlag: true, WillRetain: true, WillQos: 1, WillTopic: proto.DefaultTopics.NodePresence("n2"),
			WillPayload: sealed(t, &proto.Presence{Node: "n2", Online: false})}}
	if err := ck.ConnectEncode(&b); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 2)); err != nil { // CONNACK
		t.Fatal(err)
	}
	conn.Close() // without DISCONNECT
	for {
		pk := viewer.next(t)
		if pk.Topic != "lab/v1/json/node/n2/presence" {
			continue // the cleared status, delivered as an empty message
		}
		var p proto.Presence
		if err := json.Unmarshal(pk.Payload, &p); err != nil || p.Node != "n2" || p.Online {
			t.Fatalf("presence copy %s, want n2 offline", pk.Payload)
		}
		break
	}
}

// TestJSONMirrorOff: a broker restarted with the mirror off clears the
// copies it retained, and keeps the originals.
func TestJSONMirrorOff(t *testing.T) {
	dir := t.TempDir()
	status := proto.DefaultTopics.NodeStatus("n1")
	s1 := startServer(t, Config{DataDir: dir})
	if err := s1.Publish(status, sealed(t, &proto.NodeStatus{Node: "n1"}), true); err != nil {
		t.Fatal(err)
	}
	if len(s1.Mochi().Topics.Messages("lab/v1/json/node/n1/status")) != 1 {
		t.Fatal("no JSON copy retained")
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := startServer(t, Config{DataDir: dir, NoJSONMirror: true})
	if n := len(s2.Mochi().Topics.Messages("lab/v1/json/#")); n != 0 {
		t.Errorf("%d JSON copies still retained with the mirror off", n)
	}
	if n := len(s2.Mochi().Topics.Messages(status)); n != 1 {
		t.Errorf("the status itself: %d retained, want 1", n)
	}
	if err := s2.Publish(status, sealed(t, &proto.NodeStatus{Node: "n1"}), true); err != nil {
		t.Fatal(err)
	}
	if n := len(s2.Mochi().Topics.Messages("lab/v1/json/#")); n != 0 {
		t.Errorf("mirror off, yet %d JSON copies after a status", n)
	}
}

// TestJSONMirrorCopiesPastThePacketLimit: a JSON copy larger than
// broker.max_packet_size (the original fits) is still mirrored.
func TestJSONMirrorCopiesPastThePacketLimit(t *testing.T) {
	st := &proto.NodeStatus{Node: "n1", Checks: proto.CheckResults{}}
	for i := range 64 { // JSON spells numbers and booleans out: its copy is larger
		st.Checks[fmt.Sprintf("c%d", i)] = proto.CheckResult{At: time.Now().UnixMilli()}
	}
	raw := sealed(t, st)
	topic := proto.DefaultTopics.NodeStatus("n1")
	_, copyJSON, _ := mirrorOf(proto.DefaultTopics, topic, raw)
	limit := uint32(len(raw) + len(topic) + 64)
	if len(copyJSON) <= int(limit) {
		t.Fatalf("test setup: the copy (%d B) fits the limit (%d B)", len(copyJSON), limit)
	}
	s := startServer(t, Config{MaxPacketSize: limit})
	if err := s.Publish(topic, raw, true); err != nil {
		t.Fatal(err)
	}
	if len(s.Mochi().Topics.Messages("lab/v1/json/node/n1/status")) != 1 {
		t.Fatalf("a %d-byte copy of a %d-byte status was not mirrored (limit %d)", len(copyJSON), len(raw), limit)
	}
}

// TestMirrorCopiesEventsOnlyForSubscribers: a retained status is always
// copied (a subscriber may come later); an event only while someone
// subscribes to its copy.
func TestMirrorCopiesEventsOnlyForSubscribers(t *testing.T) {
	tp := proto.DefaultTopics
	for _, subscribed := range []bool{false, true} {
		var copies []string
		h := &mirrorHook{topics: tp, log: slog.Default(),
			publish: func(topic string, _ []byte, _ bool) error { copies = append(copies, topic); return nil },
			subscribed: func(topic string) bool {
				if topic != "lab/v1/json/node/n1/events" && topic != "lab/v1/json/node/n1/status" {
					t.Errorf("asked about %s", topic)
				}
				return subscribed
			}}
		ev := packets.Packet{TopicName: tp.NodeEvents("n1"),
			Payload: sealed(t, &proto.Event{Node: "n1", Rollout: "r1", Prev: proto.StateVerifying, State: proto.StateSucceeded})}
		st := packets.Packet{FixedHeader: packets.FixedHeader{Retain: true}, TopicName: tp.NodeStatus("n1"), Payload: sealed(t, &proto.NodeStatus{Node: "n1"})}
		h.OnPublished(nil, ev)
		h.OnPublished(nil, st)
		want := []string{"lab/v1/json/node/n1/status"}
		if subscribed {
			want = []string{"lab/v1/json/node/n1/events", "lab/v1/json/node/n1/status"}
		}
		if strings.Join(copies, " ") != strings.Join(want, " ") {
			t.Errorf("subscribed %v: copies %v, want %v", subscribed, copies, want)
		}
	}
}
