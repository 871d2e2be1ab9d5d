package homeassistant

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/bustest"
	"github.com/lab-fleet/lab/internal/testbroker"
	"github.com/lab-fleet/lab/proto"
)

func dialT(t *testing.T, _ context.Context, url, id string, onMessage func(bus.Message)) *bus.Client {
	t.Helper()
	return bustest.Dial(t, url, id, onMessage, bus.Config{})
}

func sealT(t *testing.T, node string, m interface {
	proto.Message
	Stamp(string, time.Time)
}) []byte {
	t.Helper()
	m.Stamp(node, time.Now())
	b, err := proto.Seal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func publishT(t *testing.T, ctx context.Context, c *bus.Client, topic string, payload []byte) {
	t.Helper()
	if err := c.Publish(ctx, topic, payload, true); err != nil {
		t.Fatal(err)
	}
}

// reportT publishes a node's retained presence and status.
func reportT(t *testing.T, ctx context.Context, c *bus.Client, name string, exec proto.Execution) {
	t.Helper()
	now := time.Now().UnixMilli()
	publishT(t, ctx, c, proto.DefaultTopics.NodePresence(name), sealT(t, name, &proto.Presence{Node: name, Online: true, Since: now}))
	publishT(t, ctx, c, proto.DefaultTopics.NodeStatus(name), sealT(t, name, &proto.NodeStatus{Node: name, Current: sysA, UpdatedAt: now, Execution: exec}))
}

// handler is a fleet view fed by the service's connection.
type handler interface {
	Fleet
	Handle(topic string, payload []byte)
}

// startService connects a controller service's publisher as
// cmd/labctl does (the fleet's filters, the birth topic, the retained
// states) until the returned stop.
func startService(t *testing.T, url, id string, fleet *controller.Fleet, view handler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var p *Publisher // once the connection it publishes on is up
	var ready sync.WaitGroup
	ready.Add(1)
	svc := dialT(t, ctx, url, id, func(m bus.Message) {
		ready.Wait()
		switch {
		case m.Topic == DefaultBirthTopic:
			p.HandleBirth(m.Topic, m.Payload)
		case strings.HasPrefix(m.Topic, "lab/v1/ha/"):
			p.HandleRetained(m.Topic, m.Payload)
		default:
			view.Handle(m.Topic, m.Payload)
		}
	})
	var err error
	if p, err = New(Config{Fleet: view, Bus: svc, Topics: proto.DefaultTopics, Interval: 20 * time.Millisecond,
		SweepAfter: 300 * time.Millisecond, Logger: log}); err != nil {
		t.Fatal(err)
	}
	ready.Done()
	if err := svc.Subscribe(ctx, append(fleet.Filters(), p.BirthTopic(), p.RetainedFilter())...); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	return func() { cancel(); <-done; _ = svc.Close(context.Background()) }
}

// haClient is Home Assistant: it records every message of its topics.
type haClient struct {
	c   *bus.Client
	mu  sync.Mutex
	got map[string][]string // topic → payloads, in order
}

func newHA(t *testing.T, ctx context.Context, url, id string) *haClient {
	t.Helper()
	h := &haClient{got: map[string][]string{}}
	h.c = dialT(t, ctx, url, id, func(m bus.Message) {
		h.mu.Lock()
		h.got[m.Topic] = append(h.got[m.Topic], string(m.Payload))
		h.mu.Unlock()
	})
	if err := h.c.Subscribe(ctx, "homeassistant/#", "lab/v1/ha/#"); err != nil {
		t.Fatal(err)
	}
	return h
}

func machineTopics(name string) []string {
	return []string{"homeassistant/update/lab_" + name + "_system/config", "homeassistant/binary_sensor/lab_" + name + "_online/config",
		"homeassistant/binary_sensor/lab_" + name + "_problem/config", "homeassistant/sensor/lab_" + name + "_last_switch/config",
		"lab/v1/ha/" + name + "/state"}
}

// await waits until each of topics got n payloads, the last one
// matching last.
func (h *haClient) await(t *testing.T, what string, topics []string, n int, last func(topic, payload string) bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		h.mu.Lock()
		all := true
		for _, tpc := range topics {
			ps := h.got[tpc]
			all = all && len(ps) >= n && last(tpc, ps[len(ps)-1])
		}
		h.mu.Unlock()
		if all {
			return
		}
		if time.Now().After(deadline) {
			h.mu.Lock()
			defer h.mu.Unlock()
			t.Fatalf("%s: not seen: %v", what, h.got)
		}
	}
}

// TestOverABroker runs the publisher on a real broker and a real fleet
// view, fed by the retained messages of a fake node, as the controller
// service does; Home Assistant is an MQTT client.
func TestOverABroker(t *testing.T) {
	b := testbroker.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fleet := controller.NewFleet(proto.DefaultTopics, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer startService(t, b.URL(), "controller", fleet, fleet)()

	node := dialT(t, ctx, b.URL(), "n1", nil)
	reportT(t, ctx, node, "n1", proto.Execution{Rollout: "r-1", Gen: 1, Toplevel: sysA, Action: proto.ActionSwitch,
		State: proto.StateRolledBack, Error: "health check web failed", Since: time.Now().UnixMilli()})
	ha := newHA(t, ctx, b.URL(), "homeassistant")
	topics := machineTopics("n1")
	ha.await(t, "the configs and the state", topics, 1, func(topic, p string) bool {
		return p != "" && (!strings.HasSuffix(topic, "/state") || strings.Contains(p, `"problem":"ON"`) && strings.Contains(p, `"reason":"rolled back: health check web failed"`))
	})

	// Home Assistant announces itself: everything again, though nothing
	// changed.
	if err := ha.c.Publish(ctx, DefaultBirthTopic, []byte("online"), false); err != nil { // not retained, as Home Assistant sends it
		t.Fatal(err)
	}
	ha.await(t, "everything again after the birth", topics, 2, func(string, string) bool { return true })

	// The machine goes: its status and presence are cleared. Home
	// Assistant gets empty configs (it removes the device), and the
	// broker keeps nothing retained of it.
	publishT(t, ctx, node, proto.DefaultTopics.NodeStatus("n1"), nil)
	publishT(t, ctx, node, proto.DefaultTopics.NodePresence("n1"), nil)
	ha.await(t, "the configs and the state emptied", topics, 3, func(_, p string) bool { return p == "" })
	later := newHA(t, ctx, b.URL(), "homeassistant-2")
	time.Sleep(300 * time.Millisecond)
	later.mu.Lock()
	for topic, ps := range later.got {
		t.Errorf("retained after the removal: %s %q", topic, ps)
	}
	later.mu.Unlock()

	if _, still := fleet.Get("n1"); still && len(fleet.Snapshot()) != 0 {
		t.Errorf("the fleet view still shows n1: %+v", fleet.Snapshot())
	}
}

// TestRemovedAtTheNextStart: with the real fleet view, a machine whose
// status and presence were cleared leaves Home Assistant when the service
// starts again, from the retained states the earlier run left.
func TestRemovedAtTheNextStart(t *testing.T) {
	b := testbroker.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	node := dialT(t, ctx, b.URL(), "nodes", nil)
	reportT(t, ctx, node, "n1", proto.Execution{})
	reportT(t, ctx, node, "n2", proto.Execution{})
	ha := newHA(t, ctx, b.URL(), "homeassistant")

	first := controller.NewFleet(proto.DefaultTopics, log)
	stop := startService(t, b.URL(), "controller", first, first)
	ha.await(t, "both machines", append(machineTopics("n1"), machineTopics("n2")...), 1, func(_, p string) bool { return p != "" })
	stop()

	publishT(t, ctx, node, proto.DefaultTopics.NodeStatus("n1"), nil)
	publishT(t, ctx, node, proto.DefaultTopics.NodePresence("n1"), nil)
	second := controller.NewFleet(proto.DefaultTopics, log)
	defer startService(t, b.URL(), "controller", second, second)()
	ha.await(t, "n1 removed", machineTopics("n1"), 2, func(_, p string) bool { return p == "" })
	ha.mu.Lock()
	defer ha.mu.Unlock()
	for _, topic := range machineTopics("n2") {
		if ps := ha.got[topic]; ps[len(ps)-1] == "" {
			t.Errorf("n2 removed too: %s", topic)
		}
	}
}
