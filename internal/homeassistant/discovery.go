package homeassistant

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
)

// DefaultPrefix is Home Assistant's default discovery prefix.
const DefaultPrefix = "homeassistant"

// DefaultBirthTopic is where Home Assistant announces itself: "online"
// when it (re)connects, "offline" as its Last Will.
const DefaultBirthTopic = "homeassistant/status"

// The components lab announces, and the entities of one machine.
const (
	componentUpdate       = "update"
	componentBinarySensor = "binary_sensor"
	componentSensor       = "sensor"
)

// message is one retained publish.
type message struct {
	topic   string
	payload []byte
}

// layout names the topics of one discovery prefix and one lab prefix.
type layout struct {
	discovery string       // e.g. homeassistant
	topics    proto.Topics // lab's, for the state topics
}

// stateTopic is a machine's JSON state, which every entity of the
// machine reads (lab's own status is msgpack, which Home Assistant
// cannot parse).
func (l layout) stateTopic(machine string) string {
	return l.topics.Prefix() + "/ha/" + machine + "/state"
}

// configTopic is <discovery>/<component>/<object_id>/config. The object
// id is the entity's unique id, as Home Assistant recommends.
func (l layout) configTopic(component, uniqueID string) string {
	return l.discovery + "/" + component + "/" + uniqueID + "/config"
}

// deviceID is the identifier of a machine's device in Home Assistant.
// Machine names are [a-z0-9-] (proto.ValidID), inside the character
// class discovery topics allow.
func deviceID(machine string) string { return "lab_" + machine }

// entity is one of the entities every machine has.
type entity struct {
	component string
	key       string // unique id = lab_<machine>_<key>
	name      string
	fields    map[string]any // besides the common fields
}

// entities are every machine's entities, each reading keys of the
// state JSON (state) in its templates.
var entities = []entity{
	{componentUpdate, "system", "NixOS system", map[string]any{
		"device_class":    "firmware",
		"entity_category": "config",
		"title":           "NixOS system",
		// The documented way to map a JSON state with other keys: render
		// a JSON object of installed_version and latest_version.
		"value_template": "{{ {'installed_version': value_json.installed, 'latest_version': value_json.latest} | to_json }}",
	}},
	{componentBinarySensor, "online", "Connection", map[string]any{
		"device_class":   "connectivity",
		"value_template": "{{ value_json.online }}",
		"payload_on":     "ON",
		"payload_off":    "OFF",
	}},
	{componentBinarySensor, "problem", "Problem", map[string]any{
		"device_class":             "problem",
		"value_template":           "{{ value_json.problem }}",
		"payload_on":               "ON",
		"payload_off":              "OFF",
		"json_attributes_template": "{{ {'reason': value_json.reason, 'state': value_json.state, 'rollout': value_json.rollout} | to_json }}",
	}},
	{componentSensor, "last_switch", "Last switch", map[string]any{
		"device_class":    "timestamp",
		"entity_category": "diagnostic",
		"value_template":  "{{ value_json.last_switch }}",
	}},
}

// state is a machine's JSON state. A null renders as "None" in a
// template, which Home Assistant reads as unknown.
type state struct {
	Online     *string `json:"online"`      // ON, OFF; null before any presence
	Problem    string  `json:"problem"`     // ON when the last execution failed or rolled back, or the machine reports a problem
	Reason     string  `json:"reason"`      // why (render.Attention), "" when no problem
	State      string  `json:"state"`       // the execution's state
	Rollout    string  `json:"rollout"`     // the execution's rollout
	Installed  *string `json:"installed"`   // the running system, short; null before any status
	Latest     *string `json:"latest"`      // the system it should run (its desired state), else the running one
	Current    string  `json:"current"`     // the running system's store path
	Desired    string  `json:"desired"`     // the desired system's store path, "" when none
	LastSwitch *string `json:"last_switch"` // RFC 3339, UTC; null when unknown
}

// device is the device block every entity of a machine carries, so that
// Home Assistant groups them under one device.
func device(v controller.NodeView) map[string]any {
	d := map[string]any{
		"identifiers":  []string{deviceID(v.Name)},
		"name":         v.Name,
		"manufacturer": "lab",
		"model":        "NixOS machine",
	}
	if s := v.Status; s != nil && s.NixOSVersion != "" {
		d["sw_version"] = s.NixOSVersion
	}
	return d
}

// origin tells Home Assistant who published the discovery messages.
var origin = map[string]any{"name": "lab", "support_url": "https://github.com/lab-fleet/lab"}

// configs are the discovery messages of one machine, in the order of
// entities.
func (l layout) configs(v controller.NodeView) []message {
	out := make([]message, 0, len(entities))
	dev := device(v)
	for _, e := range entities {
		uid := deviceID(v.Name) + "_" + e.key
		c := map[string]any{
			"name":        e.name,
			"unique_id":   uid,
			"state_topic": l.stateTopic(v.Name),
			"device":      dev,
			"origin":      origin,
		}
		for k, x := range e.fields {
			c[k] = x
		}
		if _, ok := c["json_attributes_template"]; ok {
			c["json_attributes_topic"] = l.stateTopic(v.Name)
		}
		b, err := json.Marshal(c) // maps marshal with sorted keys: equal configs are equal bytes
		if err != nil {
			panic(err) // strings and maps of strings only
		}
		out = append(out, message{l.configTopic(e.component, uid), b})
	}
	return out
}

// stateOf is a machine's JSON state; switched is when it last switched
// (switchedAt, kept by the caller), zero when unknown.
func stateOf(v controller.NodeView, row render.StatusRow, switched time.Time) state {
	st := state{Problem: "OFF", State: string(row.State), Rollout: row.Rollout, Current: row.Current, Desired: row.Desired}
	if v.Seen {
		st.Online = ptr(onOff(v.Online))
	}
	if row.Rank <= render.RankRolled {
		st.Problem, st.Reason = "ON", row.Attention
	}
	if row.Current != "" {
		st.Installed = ptr(Version(row.Current))
		st.Latest = st.Installed
		if row.Desired != "" {
			st.Latest = ptr(Version(row.Desired))
		}
	}
	if !switched.IsZero() {
		st.LastSwitch = ptr(switched.UTC().Format(time.RFC3339))
	}
	return st
}

// switchedAt is when a machine last activated a system, as its status
// tells: when its execution finished activating — succeeded (the new
// system) or rolled-back (the old one again), Execution.Since being when
// it entered that state — or else when the profile generation of the
// system it runs was created (a switch made by lab or by hand; a
// rollback to an older generation shows that generation's creation
// until an execution says more). Zero when the status tells neither.
func switchedAt(s *proto.NodeStatus) time.Time {
	if s == nil {
		return time.Time{}
	}
	var t time.Time
	if st := s.Execution.State; (st == proto.StateSucceeded || st == proto.StateRolledBack) && s.Execution.Since > 0 {
		t = time.UnixMilli(s.Execution.Since)
	}
	for _, g := range s.Generations {
		if g.Current && g.Toplevel == s.Current && g.Created > 0 {
			if c := time.UnixMilli(g.Created); c.After(t) {
				t = c
			}
		}
	}
	return t
}

// Version is how a system appears as a version in Home Assistant: the
// name of its store path, then the start of its hash, e.g.
// "nixos-system-n1-24.11.20241201.abcdef (kq3x9ab)". The name comes
// first so that the string never parses as a version number: Home
// Assistant then shows an update whenever the two differ, instead of
// guessing which is newer. A path outside the store is shown as it is.
func Version(toplevel string) string {
	rest, ok := strings.CutPrefix(toplevel, proto.StoreDir)
	hash, name, found := strings.Cut(rest, "-")
	if !ok || !found || len(hash) != 32 || name == "" {
		return toplevel
	}
	return name + " (" + hash[:7] + ")"
}

func onOff(b bool) string {
	if b {
		return "ON"
	}
	return "OFF"
}

func ptr[T any](x T) *T { return &x }
