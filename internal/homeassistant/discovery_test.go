package homeassistant

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
)

// What Home Assistant documents for MQTT discovery (home-assistant.io:
// integrations/mqtt "Discovery topic", update.mqtt, binary_sensor.mqtt,
// sensor.mqtt, the binary sensor and sensor device classes), as far as
// these payloads use it.
var (
	// <discovery_prefix>/<component>/[<node_id>/]<object_id>/config; node
	// and object ids "must only consist of characters from the character
	// class [a-zA-Z0-9_-]".
	discoveryTopicRE = regexp.MustCompile(`^([^/+#]+(?:/[^/+#]+)*)/(update|binary_sensor|sensor)/(?:[a-zA-Z0-9_-]+/)?([a-zA-Z0-9_-]+)/config$`)

	// Options each platform documents (availability options left out:
	// these payloads have none), plus the discovery-only device, origin,
	// platform and default_entity_id/object_id.
	common = []string{"device", "origin", "enabled_by_default", "encoding", "entity_category", "icon",
		"json_attributes_template", "json_attributes_topic", "name", "object_id", "default_entity_id", "qos", "unique_id",
		"state_topic", "value_template", "device_class", "platform"}
	documented = map[string][]string{
		"update": append(slices.Clone(common), "command_topic", "entity_picture", "latest_version_template",
			"latest_version_topic", "payload_install", "release_summary", "release_url", "retain", "title"),
		"binary_sensor": append(slices.Clone(common), "expire_after", "force_update", "off_delay", "payload_off", "payload_on"),
		"sensor": append(slices.Clone(common), "expire_after", "force_update", "last_reset_value_template",
			"suggested_display_precision", "state_class", "unit_of_measurement", "options"),
	}
	// Required options: state_topic for binary_sensor and sensor;
	// unique_id for anything with a device block ("only works through
	// MQTT discovery and when unique_id is set").
	required = map[string][]string{
		"update":        {"unique_id", "device"},
		"binary_sensor": {"state_topic", "unique_id", "device"},
		"sensor":        {"state_topic", "unique_id", "device"},
	}
	// Device classes: update's (firmware), and those of binary sensors
	// and sensors these payloads may use.
	deviceClasses = map[string][]string{
		"update": {"firmware"},
		"binary_sensor": {"battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door", "garage_door",
			"gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy", "opening", "plug", "power",
			"presence", "problem", "running", "safety", "smoke", "sound", "tamper", "update", "vibration", "window"},
		"sensor": {"date", "duration", "enum", "timestamp"}, // the non-numeric ones
	}
	// Device keys the device registry takes; identifiers or connections
	// must be present.
	deviceKeys = []string{"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model",
		"model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device"}
	// entity_category: config or diagnostic; a sensor cannot be config.
	categories = []string{"config", "diagnostic"}
	// The names Jinja finds as methods of a dict before its keys:
	// value_json.update would be dict.update, not the key.
	dictMethods = []string{"clear", "copy", "fromkeys", "get", "items", "keys", "pop", "popitem", "setdefault", "update", "values"}

	valueJSONRE = regexp.MustCompile(`value_json\.([a-zA-Z_][a-zA-Z0-9_]*)`)
)

const (
	sysA = "/nix/store/kq3x9ab0000000000000000000000000-nixos-system-n1-24.11.20241201.abcdef"
	sysB = "/nix/store/9zz00000000000000000000000000000-nixos-system-n1-24.11.20241208.123456"
)

func testLayout(t *testing.T) layout {
	t.Helper()
	return layout{discovery: DefaultPrefix, topics: proto.DefaultTopics}
}

func view(name string, online bool, exec proto.Execution, desired string) controller.NodeView {
	return controller.NodeView{Name: name, Online: online, Seen: true, DesiredToplevel: desired,
		Status: &proto.NodeStatus{Node: name, Current: sysA, Execution: exec, NixOSVersion: "24.11", UpdatedAt: 1,
			Generations: []proto.Generation{{Number: 3, Toplevel: sysA, Created: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC).UnixMilli(), Current: true}}}}
}

// TestConfigsFollowTheDocumentedSchema checks every discovery payload of
// two machines against what Home Assistant documents.
func TestConfigsFollowTheDocumentedSchema(t *testing.T) {
	l := testLayout(t)
	views := []controller.NodeView{
		view("n1", true, proto.Execution{State: proto.StateSucceeded, Since: 5}, sysB),
		view("web-2", false, proto.Execution{State: proto.StateRolledBack, Error: "health check failed"}, ""),
	}
	rows := render.StatusRows(views)
	uniques := map[string]string{}
	for i, v := range views {
		msgs := l.configs(v)
		if len(msgs) != 4 {
			t.Fatalf("%s: %d configs, want 4 (update, connectivity, problem, last switch)", v.Name, len(msgs))
		}
		stateJSON, _ := json.Marshal(stateOf(v, rows[i], switchedAt(v.Status)))
		var st map[string]any
		if err := json.Unmarshal(stateJSON, &st); err != nil {
			t.Fatal(err)
		}
		for k := range st {
			if slices.Contains(dictMethods, k) {
				t.Errorf("state key %q is a dict method in Jinja: value_json.%s would not read it", k, k)
			}
		}
		var classes []string
		for _, m := range msgs {
			mt := discoveryTopicRE.FindStringSubmatch(m.topic)
			if mt == nil {
				t.Errorf("%s: not a discovery config topic", m.topic)
				continue
			}
			prefix, component, objectID := mt[1], mt[2], mt[3]
			if prefix != DefaultPrefix {
				t.Errorf("%s: prefix %q", m.topic, prefix)
			}
			var c map[string]any
			if err := json.Unmarshal(m.payload, &c); err != nil {
				t.Errorf("%s: payload is not a JSON object: %v", m.topic, err)
				continue
			}
			for k := range c {
				if !slices.Contains(documented[component], k) {
					t.Errorf("%s: option %q is not documented for %s", m.topic, k, component)
				}
			}
			for _, k := range required[component] {
				if _, ok := c[k]; !ok {
					t.Errorf("%s: required option %q missing", m.topic, k)
				}
			}
			uid, _ := c["unique_id"].(string)
			if uid != objectID {
				t.Errorf("%s: object id %q is not the unique id %q (the documented best practice)", m.topic, objectID, uid)
			}
			if other, dup := uniques[uid]; dup {
				t.Errorf("unique_id %q of %s already used by %s", uid, m.topic, other)
			}
			uniques[uid] = m.topic
			dc, _ := c["device_class"].(string)
			if !slices.Contains(deviceClasses[component], dc) {
				t.Errorf("%s: device_class %q not one of %s's", m.topic, dc, component)
			}
			classes = append(classes, component+":"+dc)
			if ec, ok := c["entity_category"]; ok {
				if s, _ := ec.(string); !slices.Contains(categories, s) || component == "sensor" && s == "config" {
					t.Errorf("%s: entity_category %v not allowed for %s", m.topic, ec, component)
				}
			}
			if c["state_topic"] != l.stateTopic(v.Name) {
				t.Errorf("%s: state_topic %v, want %s", m.topic, c["state_topic"], l.stateTopic(v.Name))
			}
			if _, ok := c["json_attributes_template"]; ok && c["json_attributes_topic"] != l.stateTopic(v.Name) {
				t.Errorf("%s: json_attributes_template without the state topic as json_attributes_topic", m.topic)
			}
			// Every template reads keys the state JSON has.
			for _, key := range []string{"value_template", "json_attributes_template", "latest_version_template"} {
				tpl, ok := c[key].(string)
				if !ok {
					continue
				}
				refs := valueJSONRE.FindAllStringSubmatch(tpl, -1)
				if len(refs) == 0 || !strings.HasPrefix(tpl, "{{") || !strings.HasSuffix(tpl, "}}") {
					t.Errorf("%s: %s %q reads nothing of the state", m.topic, key, tpl)
				}
				for _, r := range refs {
					if _, ok := st[r[1]]; !ok {
						t.Errorf("%s: %s reads value_json.%s, which the state %s lacks", m.topic, key, r[1], stateJSON)
					}
				}
			}
			if component == "update" {
				// installed_version and latest_version are what the
				// update entity takes from a JSON state.
				tpl, _ := c["value_template"].(string)
				if !strings.Contains(tpl, "'installed_version'") || !strings.Contains(tpl, "'latest_version'") || !strings.HasSuffix(tpl, "| to_json }}") {
					t.Errorf("%s: value_template %q does not render installed_version and latest_version as JSON", m.topic, tpl)
				}
			}
			if component == "binary_sensor" {
				// The state's values are the payloads compared.
				for _, r := range valueJSONRE.FindAllStringSubmatch(c["value_template"].(string), -1) {
					if s, ok := st[r[1]].(string); ok && s != c["payload_on"] && s != c["payload_off"] {
						t.Errorf("%s: state %s=%q is neither payload_on nor payload_off", m.topic, r[1], s)
					}
				}
			}
			checkDevice(t, m.topic, c["device"], v.Name)
		}
		want := []string{"update:firmware", "binary_sensor:connectivity", "binary_sensor:problem", "sensor:timestamp"}
		if !slices.Equal(classes, want) {
			t.Errorf("%s: entities %v, want %v", v.Name, classes, want)
		}
	}
}

func checkDevice(t *testing.T, topic string, d any, machine string) {
	t.Helper()
	dev, ok := d.(map[string]any)
	if !ok {
		t.Errorf("%s: device %v is not a map", topic, d)
		return
	}
	for k := range dev {
		if !slices.Contains(deviceKeys, k) {
			t.Errorf("%s: device key %q is not documented", topic, k)
		}
	}
	ids, _ := dev["identifiers"].([]any)
	if len(ids) != 1 || ids[0] != "lab_"+machine {
		t.Errorf("%s: device identifiers %v, want [lab_%s]", topic, dev["identifiers"], machine)
	}
	if dev["name"] != machine || dev["manufacturer"] != "lab" || dev["model"] != "NixOS machine" {
		t.Errorf("%s: device %v", topic, dev)
	}
}

func TestState(t *testing.T) {
	created := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	finished := time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		v      controller.NodeView
		want   state
		wantAt time.Time
	}{
		{"update pending", view("n1", true, proto.Execution{State: proto.StateQueued, Since: finished.UnixMilli()}, sysB),
			state{Online: ptr("ON"), Problem: "OFF", State: "queued", Installed: ptr("nixos-system-n1-24.11.20241201.abcdef (kq3x9ab)"),
				Latest: ptr("nixos-system-n1-24.11.20241208.123456 (9zz0000)"), Current: sysA, Desired: sysB}, created},
		{"succeeded, no desired", view("n1", false, proto.Execution{State: proto.StateSucceeded, Since: finished.UnixMilli()}, ""),
			state{Online: ptr("OFF"), Problem: "OFF", State: "succeeded", Installed: ptr("nixos-system-n1-24.11.20241201.abcdef (kq3x9ab)"),
				Latest: ptr("nixos-system-n1-24.11.20241201.abcdef (kq3x9ab)"), Current: sysA}, finished},
		{"rolled back", view("n1", true, proto.Execution{State: proto.StateRolledBack, Rollout: "r1", Error: "check web failed", Since: finished.UnixMilli()}, sysB),
			state{Online: ptr("ON"), Problem: "ON", Reason: "rolled back: check web failed", State: "rolled-back", Rollout: "r1",
				Installed: ptr("nixos-system-n1-24.11.20241201.abcdef (kq3x9ab)"), Latest: ptr("nixos-system-n1-24.11.20241208.123456 (9zz0000)"),
				Current: sysA, Desired: sysB}, finished},
		{"failed", view("n1", true, proto.Execution{State: proto.StateFailed, Error: "build failed", Since: finished.UnixMilli()}, ""),
			state{Online: ptr("ON"), Problem: "ON", Reason: "failed: build failed", State: "failed",
				Installed: ptr("nixos-system-n1-24.11.20241201.abcdef (kq3x9ab)"), Latest: ptr("nixos-system-n1-24.11.20241201.abcdef (kq3x9ab)"), Current: sysA}, created},
		{"presence only", controller.NodeView{Name: "n2", Seen: true},
			state{Online: ptr("OFF"), Problem: "OFF", State: "idle"}, time.Time{}},
		{"status only", controller.NodeView{Name: "n3", Status: &proto.NodeStatus{Node: "n3", Current: "/run/current-system"}},
			state{Problem: "OFF", State: "idle", Installed: ptr("/run/current-system"), Latest: ptr("/run/current-system"), Current: "/run/current-system"}, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := switchedAt(tc.v.Status)
			if !at.Equal(tc.wantAt) {
				t.Errorf("switchedAt = %v, want %v", at, tc.wantAt)
			}
			tc.want.LastSwitch = nil
			if !tc.wantAt.IsZero() {
				tc.want.LastSwitch = ptr(tc.wantAt.Format(time.RFC3339))
			}
			got, _ := json.Marshal(stateOf(tc.v, render.StatusRows([]controller.NodeView{tc.v})[0], at))
			want, _ := json.Marshal(tc.want)
			if string(got) != string(want) {
				t.Errorf("state\n got %s\nwant %s", got, want)
			}
			// A timestamp sensor takes ISO 8601 with a time zone.
			var m map[string]any
			_ = json.Unmarshal(got, &m)
			if s, ok := m["last_switch"].(string); ok {
				if _, err := time.Parse(time.RFC3339, s); err != nil || !strings.HasSuffix(s, "Z") {
					t.Errorf("last_switch %q: %v", s, err)
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	for in, want := range map[string]string{
		sysA:                 "nixos-system-n1-24.11.20241201.abcdef (kq3x9ab)",
		"/nix/store/short-x": "/nix/store/short-x",
		"/run/current":       "/run/current",
		"":                   "",
	} {
		if got := Version(in); got != want {
			t.Errorf("Version(%q) = %q, want %q", in, got, want)
		}
	}
}
