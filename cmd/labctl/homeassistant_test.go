package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lab-fleet/lab/broker/access"
	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/bustest"
	"github.com/lab-fleet/lab/internal/configkeys"
	"github.com/lab-fleet/lab/internal/homeassistant"
	"github.com/lab-fleet/lab/internal/testbroker"
	"github.com/lab-fleet/lab/proto"
)

// The access rules grant Home Assistant's default prefix and birth topic,
// which are the publisher's defaults.
func TestHomeAssistantACLMatchesDefaults(t *testing.T) {
	if access.HomeAssistantPrefix != homeassistant.DefaultPrefix || access.HomeAssistantBirth != homeassistant.DefaultBirthTopic {
		t.Errorf("access grants %s and %s; the publisher uses %s and %s", access.HomeAssistantPrefix, access.HomeAssistantBirth,
			homeassistant.DefaultPrefix, homeassistant.DefaultBirthTopic)
	}
}

func TestHomeAssistantConfigCheck(t *testing.T) {
	clearBrokerEnv(t)
	for _, c := range []struct {
		args []string
		env  map[string]string
		code int
		want string
	}{
		{[]string{"broker", "--check-config", "--homeassistant", "--homeassistant-prefix", "ha/#"}, nil, 2, "controller.homeassistant.prefix"},
		{[]string{"broker", "--check-config", "--homeassistant", "--homeassistant-prefix", "my/ha"}, nil, 0, ""},
		{[]string{"broker", "--check-config"}, map[string]string{"LAB_CONTROLLER_HOMEASSISTANT_ENABLED": "maybe"}, 2, "controller.homeassistant.enabled"},
		{[]string{"broker", "--check-config"}, map[string]string{"LAB_CONTROLLER_HOMEASSISTANT_PREFIX": "/x"}, 2, "controller.homeassistant.prefix"},
	} {
		for k, v := range c.env {
			t.Setenv(k, v)
		}
		var out, errOut syncBuffer
		code := run(context.Background(), c.args, &out, &errOut)
		if code != c.code || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("%v %v: exit %d, want %d with %q:\n%s", c.args, c.env, code, c.code, c.want, errOut.String())
		}
		for k := range c.env {
			os.Unsetenv(k)
		}
	}
	// The config file's keys are known to the strict check.
	cfg := writeFile(t, "labctl.yaml", "controller:\n  homeassistant:\n    enabled: true\n    prefix: homeassistant\n")
	var out, errOut syncBuffer
	if code := run(context.Background(), []string{"--config", cfg, "broker", "--check-config"}, &out, &errOut); code != 0 {
		t.Errorf("config file: exit %d\n%s", code, errOut.String())
	}
}

// inbox collects what an MQTT client receives, by topic.
type inbox struct {
	mu   sync.Mutex
	last map[string]string
	n    map[string]int // deliveries per topic
}

func (b *inbox) add(m bus.Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.last[m.Topic] = string(m.Payload)
	b.n[m.Topic]++
}

func (b *inbox) get(topic string) (string, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last[topic], b.n[topic]
}

// await waits until ok holds for what arrived.
func (b *inbox) await(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ok() {
			return
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t.Fatalf("%s: not seen; received %v", what, b.last)
}

// TestBrokerHomeAssistant runs labctl broker --homeassistant with
// identities: a node reports, Home Assistant (a viewer) sees its device's
// discovery configs and state, says online and gets them again.
func TestBrokerHomeAssistant(t *testing.T) {
	clearBrokerEnv(t)
	dir := t.TempDir()
	ids := filepath.Join(dir, "identities.yaml")
	secrets := filepath.Join(dir, "secrets")
	for _, args := range [][]string{
		{"node", "add", "n1", "--groups", "web", "--identities", ids, "--out", secrets},
		{"node", "add", "homeassistant", "--role", "viewer", "--identities", ids, "--out", secrets},
	} {
		var out, errOut syncBuffer
		if code := run(context.Background(), args, &out, &errOut); code != 0 {
			t.Fatalf("%v: exit %d\n%s", args, code, errOut.String())
		}
	}
	password := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(secrets, name+".password"))
		if err != nil {
			t.Fatal(err)
		}
		return []byte(strings.TrimSpace(string(b)))
	}

	var out, errOut syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"broker", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"), "--identities", ids, "--homeassistant"}, &out, &errOut)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("broker did not stop")
		}
	}()
	addr := awaitListening(t, errOut.String)
	dial := func(user, clientID string, onMessage func(bus.Message)) *bus.Client {
		t.Helper()
		return bustest.Dial(t, "mqtt://"+addr, clientID, onMessage, bus.Config{Username: user, Password: password(user)})
	}

	// A node reports: online, running sysA, its last rollout succeeded.
	node := dial("n1", "n1", nil)
	tp := proto.DefaultTopics
	now := time.Now()
	const sys = "/nix/store/kq3x9ab0000000000000000000000000-nixos-system-n1-24.11"
	seal := func(m interface {
		proto.Message
		Stamp(string, time.Time)
	}) []byte {
		m.Stamp("n1", now)
		b, err := proto.Seal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for topic, payload := range map[string][]byte{
		tp.NodePresence("n1"): seal(&proto.Presence{Node: "n1", Online: true, Since: now.UnixMilli()}),
		tp.NodeStatus("n1"): seal(&proto.NodeStatus{Node: "n1", Groups: []string{"web"}, Current: sys, Booted: sys, UpdatedAt: now.UnixMilli(),
			Execution: proto.Execution{Rollout: "r-1", Gen: 1, Toplevel: sys, Action: proto.ActionSwitch, State: proto.StateSucceeded, Since: now.UnixMilli()}}),
	} {
		if err := node.Publish(ctx, topic, payload, true); err != nil {
			t.Fatal(err)
		}
	}

	// Home Assistant subscribes as its MQTT integration does.
	in := &inbox{last: map[string]string{}, n: map[string]int{}}
	ha := dial("homeassistant", "homeassistant-1", in.add)
	if err := ha.Subscribe(ctx, "homeassistant/#", "lab/v1/ha/#"); err != nil {
		t.Fatalf("a viewer may not subscribe to Home Assistant's topics: %v", err)
	}
	configs := []string{"homeassistant/update/lab_n1_system/config", "homeassistant/binary_sensor/lab_n1_online/config",
		"homeassistant/binary_sensor/lab_n1_problem/config", "homeassistant/sensor/lab_n1_last_switch/config"}
	const stateTopic = "lab/v1/ha/n1/state"
	in.await(t, "the discovery configs and the state", func() bool {
		for _, c := range append(configs, stateTopic) {
			if p, _ := in.get(c); p == "" {
				return false
			}
		}
		return true
	})
	for _, c := range configs {
		p, _ := in.get(c)
		var m map[string]any
		if err := json.Unmarshal([]byte(p), &m); err != nil {
			t.Fatalf("%s: %v: %s", c, err, p)
		}
		dev, _ := m["device"].(map[string]any)
		if m["state_topic"] != stateTopic || dev["name"] != "n1" {
			t.Errorf("%s: %s", c, p)
		}
	}
	var st map[string]any
	p, _ := in.get(stateTopic)
	if err := json.Unmarshal([]byte(p), &st); err != nil {
		t.Fatal(err)
	}
	if st["online"] != "ON" || st["problem"] != "OFF" || st["installed"] != "nixos-system-n1-24.11 (kq3x9ab)" || st["last_switch"] == nil {
		t.Errorf("state: %s", p)
	}

	// Home Assistant comes online (its birth): everything again.
	_, before := in.get(configs[0])
	if err := ha.Publish(ctx, access.HomeAssistantBirth, []byte("online"), false); err != nil {
		t.Fatal(err)
	}
	in.await(t, "the configs again after the birth message", func() bool {
		for _, c := range append(configs, stateTopic) {
			if _, n := in.get(c); n <= before {
				return false
			}
		}
		return true
	})

	// The node goes offline: the state follows.
	if err := node.Publish(ctx, tp.NodePresence("n1"), seal(&proto.Presence{Node: "n1", Online: false, Since: time.Now().UnixMilli()}), true); err != nil {
		t.Fatal(err)
	}
	in.await(t, "online OFF", func() bool { p, _ := in.get(stateTopic); return strings.Contains(p, `"online":"OFF"`) })

	// Home Assistant may not publish elsewhere: the broker drops it.
	_ = ha.Publish(ctx, configs[0], []byte("{}"), true)
	time.Sleep(300 * time.Millisecond)
	if p, _ := in.get(configs[0]); p == "{}" {
		t.Error("a viewer replaced a discovery config")
	}
	if !strings.Contains(errOut.String(), "home assistant discovery") {
		t.Errorf("no start log:\n%s", errOut.String())
	}
}

// TestControllerHomeAssistant runs labctl controller --homeassistant as a
// client of another broker: the birth and the retained states reach the
// publisher through the connection's extra routes, the fleet's messages
// still reach the fleet.
func TestControllerHomeAssistant(t *testing.T) {
	clearBrokerEnv(t)
	b := testbroker.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"controller", "--broker", b.URL(), "--controller-dir", t.TempDir(), "--homeassistant"}, &out, &errOut)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("controller did not stop")
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(errOut.String(), "controller service running"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the controller did not start:\n%s", errOut.String())
		}
	}
	dial := func(id string, onMessage func(bus.Message)) *bus.Client {
		t.Helper()
		return bustest.Dial(t, b.URL(), id, onMessage, bus.Config{})
	}
	node := dial("web", nil)
	tp := proto.DefaultTopics
	p := &proto.Presence{Node: "web", Online: true, Since: time.Now().UnixMilli()}
	p.Stamp("web", time.Now())
	payload, err := proto.Seal(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Publish(ctx, tp.NodePresence("web"), payload, true); err != nil {
		t.Fatal(err)
	}
	in := &inbox{last: map[string]string{}, n: map[string]int{}}
	ha := dial("homeassistant", in.add)
	if err := ha.Subscribe(ctx, "homeassistant/#", "lab/v1/ha/#"); err != nil {
		t.Fatal(err)
	}
	const config, state = "homeassistant/binary_sensor/lab_web_online/config", "lab/v1/ha/web/state"
	in.await(t, "web's config and state", func() bool {
		p, _ := in.get(state)
		c, _ := in.get(config)
		return c != "" && strings.Contains(p, `"online":"ON"`)
	})
	_, before := in.get(config)
	if err := ha.Publish(ctx, access.HomeAssistantBirth, []byte("online"), false); err != nil {
		t.Fatal(err)
	}
	in.await(t, "the config again after the birth", func() bool { _, n := in.get(config); return n > before })
}

// docs/homeassistant.md's config file is one labctl broker reads, with
// Home Assistant's discovery on.
func TestHomeAssistantDocExample(t *testing.T) {
	clearBrokerEnv(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "homeassistant.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := docBlockRE.FindAllStringSubmatch(string(b), -1)
	if len(blocks) != 1 {
		t.Fatalf("docs/homeassistant.md: %d config examples, want 1", len(blocks))
	}
	g := newGlobals(new(strings.Builder), new(strings.Builder))
	g.v.SetConfigFile(writeFile(t, "labctl.yaml", blocks[0][2]))
	if err := g.v.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	if err := configkeys.Unknown("docs/homeassistant.md", g.v.AllKeys(), configKeys()); err != nil {
		t.Error(err)
	}
	cfg, err := brokerConfig(g.v)
	if err != nil || cfg.Identities == "" {
		t.Errorf("broker config %+v: %v", cfg, err)
	}
	if on, prefix, err := homeAssistantSettings(g); !on || prefix != homeassistant.DefaultPrefix || err != nil {
		t.Errorf("home assistant: %v %q %v", on, prefix, err)
	}
}
