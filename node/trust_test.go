package node

import (
	"errors"
	"strings"
	"testing"

	"github.com/lab-fleet/lab/proto"
)

// Two keys, two powers: which key may sign which message kind, for every
// way a node can pin keys. want is "" (accepted) or a part of the reason.
func TestTrustedKeysByPower(t *testing.T) {
	mustKey := func(id string) proto.PrivateKey {
		k, err := proto.GenerateKey(id)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	op, ctl, stranger := mustKey("op"), mustKey("ctl"), mustKey("stranger")
	forged := mustKey("ctl") // claims the controller key's id
	msgs := map[string]func() proto.Signable{
		"desired": func() proto.Signable { return &proto.Desired{Node: "n1", Rollout: "r1", Gen: 1} },
		"gate":    func() proto.Signable { return &proto.Gate{Group: "web", Rollout: "r1", OpenWave: 1, Seq: 1} },
		"command": func() proto.Signable { return &proto.Command{Op: proto.OpCancel, Rollout: "r1"} },
	}
	both := newPins([]string{op.Public().String()}, []string{ctl.Public().String()})
	operatorOnly := newPins([]string{op.Public().String()}, nil)
	controllerOnly := newPins(nil, []string{ctl.Public().String()})
	nothing := newPins(nil, nil)
	const ctlDesired = `signed by controller key "ctl", which may sign gates and commands only: a Desired needs an operator key (trusted_keys)`
	for _, tc := range []struct {
		pins   string
		p      pins
		signer *proto.PrivateKey // nil: unsigned
		kind   string
		want   string
	}{
		{"both", both, &op, "desired", ""},
		{"both", both, &op, "gate", ""},
		{"both", both, &op, "command", ""},
		{"both", both, &ctl, "desired", ctlDesired},
		{"both", both, &ctl, "gate", ""},
		{"both", both, &ctl, "command", ""},
		{"both", both, &forged, "desired", "bad signature"},
		{"both", both, &forged, "gate", "bad signature"},
		{"controller only", controllerOnly, &forged, "desired", "bad signature"},
		{"both", both, &stranger, "desired", "unknown key"},
		{"both", both, &stranger, "command", "unknown key"},
		{"both", both, nil, "desired", "not signed"},
		{"both", both, nil, "gate", "not signed"},
		{"operator only", operatorOnly, &op, "desired", ""},
		{"operator only", operatorOnly, &op, "gate", ""},
		{"operator only", operatorOnly, &ctl, "gate", "unknown key"},
		{"operator only", operatorOnly, &ctl, "desired", "unknown key"},
		{"controller only", controllerOnly, &ctl, "desired", ctlDesired},
		{"controller only", controllerOnly, &ctl, "gate", ""},
		{"controller only", controllerOnly, &ctl, "command", ""},
		{"controller only", controllerOnly, &op, "desired", "no operator key pinned (trusted_keys is empty"},
		{"controller only", controllerOnly, nil, "desired", "no operator key pinned"},
		{"controller only", controllerOnly, nil, "command", "not signed"},
		{"controller only", controllerOnly, &op, "gate", "unknown key"},
		{"no key", nothing, nil, "desired", ""},
		{"no key", nothing, nil, "gate", ""},
		{"no key", nothing, &ctl, "command", ""},
	} {
		m := msgs[tc.kind]()
		signer := "unsigned"
		if tc.signer != nil {
			signer = tc.signer.ID
			if tc.signer == &forged {
				signer = "forged ctl"
			}
			if err := proto.Sign(m, *tc.signer); err != nil {
				t.Fatal(err)
			}
		}
		var err error
		if d, ok := m.(*proto.Desired); ok {
			err = tc.p.verifyDesired(d)
		} else {
			err = tc.p.verifyControl(m)
		}
		name := tc.pins + " pinned, " + tc.kind + " by " + signer
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: rejected: %v", name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err = %v, want it to say %q", name, err, tc.want)
		case tc.want == ctlDesired && err.Error() != ctlDesired:
			t.Errorf("%s: reason %q, want exactly %q", name, err, ctlDesired)
		case tc.want == ctlDesired && !errors.Is(err, proto.ErrUnknownKey):
			t.Errorf("%s: %v does not wrap ErrUnknownKey", name, err)
		}
	}
}
