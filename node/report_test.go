package node

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/lab-fleet/lab/node/nixsys/nixsystest"
	"github.com/lab-fleet/lab/proto"
)

// A node's status names the keys it pins, by power, as a controller
// receives it (sealed and decoded); and what the status says it accepts
// is what the node accepts.
func TestStatusReportsPinnedKeys(t *testing.T) {
	key := func(id string) proto.PrivateKey {
		k, err := proto.GenerateKey(id)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	opA, opB, ctl, stranger := key("op-a"), key("op-b"), key("ctl-1"), key("stranger")
	pub := func(ks ...proto.PrivateKey) []string {
		var s []string
		for _, k := range ks {
			s = append(s, k.Public().String())
		}
		return s
	}
	for _, c := range []struct {
		name                string
		trusted, controller []string
		want                *proto.KeyPins
	}{
		{"trusted keys only", pub(opB, opA), nil,
			&proto.KeyPins{Operator: []string{"op-a", "op-b"}, Controller: []string{}}},
		{"trusted and controller keys", pub(opA), pub(ctl),
			&proto.KeyPins{Operator: []string{"op-a"}, Controller: []string{"ctl-1"}}},
		{"controller keys only", nil, pub(ctl),
			&proto.KeyPins{Operator: []string{}, Controller: []string{"ctl-1"}}},
		{"a key in both lists is an operator key", pub(opA, opB), pub(ctl, opB),
			&proto.KeyPins{Operator: []string{"op-a", "op-b"}, Controller: []string{"ctl-1"}}},
		{"no keys", nil, nil,
			&proto.KeyPins{Operator: []string{}, Controller: []string{}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := testDaemon(t, c.trusted, c.controller)
			b, err := proto.Seal(d.status())
			if err != nil {
				t.Fatal(err)
			}
			var s proto.NodeStatus
			if err := proto.Decode(b, &s); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(s.Pins, c.want) {
				t.Fatalf("pins = %+v, want %+v", s.Pins, c.want)
			}
			for _, k := range []*proto.PrivateKey{&opA, &opB, &ctl, &stranger, nil} {
				id := ""
				g := &proto.Gate{Group: "web", Rollout: "r1", OpenWave: 1, Seq: 1}
				dsr := &proto.Desired{Node: "n1", Rollout: "r1", Gen: 1}
				if k != nil {
					id = k.ID
					if err := proto.Sign(g, *k); err != nil {
						t.Fatal(err)
					}
					if err := proto.Sign(dsr, *k); err != nil {
						t.Fatal(err)
					}
				}
				ok, known := s.AcceptsGateKey(id)
				if err := d.keys.verifyControl(g); !known || ok != (err == nil) {
					t.Errorf("gate by %q: status says %v (known %v), node says %v", id, ok, known, err)
				}
				ok, known = s.AcceptsDesiredKey(id)
				if err := d.keys.verifyDesired(dsr); !known || ok != (err == nil) {
					t.Errorf("desired by %q: status says %v (known %v), node says %v", id, ok, known, err)
				}
			}
		})
	}
}

// A node that pins more keys than a status may list does not report them
// (a controller then cannot tell) rather than report some of them, and
// its status is still published.
func TestStatusWithTooManyKeysReportsNone(t *testing.T) {
	var trusted []string
	for i := range proto.MaxPinnedKeys + 1 {
		k, err := proto.GenerateKey(fmt.Sprintf("op-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		trusted = append(trusted, k.Public().String())
	}
	s := testDaemon(t, trusted, nil).status()
	if s.Pins != nil {
		t.Fatalf("pins = %+v, want none reported", s.Pins)
	}
	if _, err := proto.Seal(s); err != nil {
		t.Fatal(err)
	}
	d := testDaemon(t, trusted[:proto.MaxPinnedKeys], trusted[:proto.MaxPinnedKeys])
	if p := d.status().Pins; p == nil || len(p.Operator) != proto.MaxPinnedKeys {
		t.Fatalf("%d keys: pins = %+v", proto.MaxPinnedKeys, p)
	}
}

func testDaemon(t *testing.T, trusted, controller []string) *Daemon {
	t.Helper()
	dir := t.TempDir()
	d, err := New(Config{Name: "n1", Broker: []string{"mqtt://127.0.0.1:1"}, StateDir: filepath.Join(dir, "state"),
		BootIDFile: filepath.Join(dir, "boot_id"), TrustedKeys: trusted, ControllerKeys: controller,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nixsystest.New())
	if err != nil {
		t.Fatal(err)
	}
	return d
}
