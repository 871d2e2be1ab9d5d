package proto

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// A controller asks a target's status whether the target would take the
// gates and commands it signs (and, for a Desired, whether the target
// pins the operator key): yes, no, or "does not say" (an older labd).
func TestStatusAcceptsKey(t *testing.T) {
	both := &NodeStatus{Pins: &KeyPins{Operator: []string{"op"}, Controller: []string{"ctl"}}}
	operatorOnly := &NodeStatus{Pins: &KeyPins{Operator: []string{"op", "op-old"}}}
	controllerOnly := &NodeStatus{Pins: &KeyPins{Controller: []string{"ctl"}}}
	none := &NodeStatus{Pins: &KeyPins{Operator: []string{}, Controller: []string{}}}
	noneNil := &NodeStatus{Pins: &KeyPins{}}
	old := &NodeStatus{}
	for _, c := range []struct {
		name string
		s    *NodeStatus
		id   string // "" = unsigned
		gate string // AcceptsGateKey: "yes", "no" or "unknown"
		dsr  string // AcceptsDesiredKey
	}{
		{"both, controller key", both, "ctl", "yes", "no"},
		{"both, operator key", both, "op", "yes", "yes"},
		{"both, stranger", both, "other", "no", "no"},
		{"both, unsigned", both, "", "no", "no"},
		{"both, id differs in case", both, "CTL", "no", "no"},
		{"operator only, controller key", operatorOnly, "ctl", "no", "no"},
		{"operator only, operator key", operatorOnly, "op-old", "yes", "yes"},
		{"controller only, controller key", controllerOnly, "ctl", "yes", "no"},
		{"controller only, unsigned", controllerOnly, "", "no", "no"},
		{"no keys, any key", none, "ctl", "yes", "yes"},
		{"no keys, unsigned", none, "", "yes", "yes"},
		{"no keys (nil lists)", noneNil, "ctl", "yes", "yes"},
		{"older labd", old, "ctl", "unknown", "unknown"},
		{"older labd, unsigned", old, "", "unknown", "unknown"},
		{"no status", nil, "ctl", "unknown", "unknown"},
	} {
		say := func(ok, known bool) string {
			switch {
			case !known && ok:
				return "accepts without knowing"
			case !known:
				return "unknown"
			case ok:
				return "yes"
			}
			return "no"
		}
		if got := say(c.s.AcceptsGateKey(c.id)); got != c.gate {
			t.Errorf("%s: AcceptsGateKey(%q) = %s, want %s", c.name, c.id, got, c.gate)
		}
		if got := say(c.s.AcceptsDesiredKey(c.id)); got != c.dsr {
			t.Errorf("%s: AcceptsDesiredKey(%q) = %s, want %s", c.name, c.id, got, c.dsr)
		}
	}
}

func TestKeyPinsGateKeys(t *testing.T) {
	for _, c := range []struct {
		p    KeyPins
		want []string
	}{
		{KeyPins{}, nil},
		{KeyPins{Operator: []string{"op"}}, []string{"op"}},
		{KeyPins{Operator: []string{"op-b", "op-a"}, Controller: []string{"ctl", "op-a"}}, []string{"ctl", "op-a", "op-b"}},
	} {
		got := c.p.GateKeys()
		if !slices.Equal(got, c.want) {
			t.Errorf("%+v: GateKeys() = %q, want %q", c.p, got, c.want)
		}
		if len(c.p.Operator) > 0 && &got[0] == &c.p.Operator[0] {
			t.Errorf("%+v: GateKeys() aliases Operator", c.p)
		}
	}
}

// pins are key ids, bounded: a status that carries anything else is refused.
func TestStatusPinsValidate(t *testing.T) {
	if err := Decode(readFixture(t, "status"), new(NodeStatus)); err != nil {
		t.Fatalf("status fixture: %v", err)
	}
	many := make([]string, MaxPinnedKeys+1)
	for i := range many {
		many[i] = fmt.Sprintf("k%d", i)
	}
	setPins := func(pins any) func(map[string]any) {
		return func(m map[string]any) { m["pins"] = pins }
	}
	for _, c := range []struct {
		name string
		fn   func(map[string]any)
		want error
		in   string
	}{
		{"id with a colon", setPins(map[string]any{"operator": []string{"op:AAAA"}, "controller": []string{}}), ErrInvalidField, "pins.operator[0]"},
		{"empty id", setPins(map[string]any{"operator": []string{}, "controller": []string{"ok", ""}}), ErrInvalidField, "pins.controller[1]"},
		{"id too long", setPins(map[string]any{"operator": []string{strings.Repeat("k", 65)}, "controller": []string{}}), ErrInvalidField, "pins.operator[0]"},
		{"id with a space", setPins(map[string]any{"operator": []string{"op 1"}, "controller": []string{}}), ErrInvalidField, "pins.operator[0]"},
		{"too many operator keys", setPins(map[string]any{"operator": many, "controller": []string{}}), ErrInvalidField, "pins.operator: invalid field: 33 entries, at most 32"},
		{"too many controller keys", setPins(map[string]any{"operator": []string{}, "controller": many}), ErrInvalidField, "pins.controller"},
		{"not a map", setPins([]string{"op"}), ErrMalformed, ""},
		{"unknown power", setPins(map[string]any{"operator": []string{}, "desired": []string{"op"}}), ErrMalformed, "desired"},
	} {
		err := Decode(rawMap(t, "status", c.fn), new(NodeStatus))
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.in) {
			t.Errorf("%s: got %v, want %v naming %q", c.name, err, c.want, c.in)
		}
	}
	// At the limit is fine; labd never publishes beyond it.
	ok := rawMap(t, "status", setPins(map[string]any{"operator": many[:MaxPinnedKeys], "controller": many[:MaxPinnedKeys]}))
	if err := Decode(ok, new(NodeStatus)); err != nil {
		t.Errorf("%d keys of each power: %v", MaxPinnedKeys, err)
	}
	s := &NodeStatus{Envelope: env("s"), Node: "n1", Pins: &KeyPins{Operator: []string{"op/1"}}}
	if _, err := Seal(s); !errors.Is(err, ErrInvalidField) || !strings.Contains(err.Error(), "pins.operator[0]") {
		t.Errorf("Seal: got %v", err)
	}
}

// Absent, "pins no key" and some keys are three things on the wire and in
// the JSON mirror, and an older labd's status is unchanged.
func TestStatusPinsWire(t *testing.T) {
	var m map[string]any
	if err := msgpack.Unmarshal(readFixture(t, "status-old"), &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["pins"]; ok {
		t.Error("a status without pins carries the key")
	}
	var old NodeStatus
	if err := Decode(readFixture(t, "status-old"), &old); err != nil {
		t.Fatal(err)
	}
	if old.Pins != nil {
		t.Errorf("older labd's status decodes with pins %+v", old.Pins)
	}
	if j, _ := json.Marshal(&old); strings.Contains(string(j), "pins") {
		t.Errorf("JSON of a status without pins: %s", j)
	}

	none := &NodeStatus{Envelope: env("s"), Node: "n1", Pins: &KeyPins{Operator: []string{}, Controller: []string{}}}
	b, err := Seal(none)
	if err != nil {
		t.Fatal(err)
	}
	var got NodeStatus
	if err := Decode(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Pins == nil || !got.Pins.None() {
		t.Fatalf("pins of a node that pins no key decode as %+v", got.Pins)
	}
	if ok, known := got.AcceptsGateKey("ctl"); !ok || !known {
		t.Errorf("no keys pinned: AcceptsGateKey = %v, %v", ok, known)
	}
	j, err := json.Marshal(&got)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(j), `"pins":{"operator":[],"controller":[]}`) {
		t.Errorf("JSON of a node that pins no key: %s", j)
	}
	again, err := Encode(&got)
	if err != nil || string(again) != string(b) {
		t.Errorf("re-encoding differs: %v", err)
	}
}
