package node

import (
	"errors"
	"fmt"
	"slices"

	"github.com/lab-fleet/lab/proto"
)

// pins are the public keys a node trusts, by power (DESIGN §9, "two keys,
// two powers"): the operator's keys (trusted_keys) sign Desired, *what*
// the machine runs; the controller's keys (controller_keys) sign Gates
// and Commands, *when*, reboots and cancels. Operator keys may sign Gates
// and Commands too, so that a CLI-driven rollout (labctl
// --local-controller, and every rollout before the controller service)
// keeps working.
type pins struct {
	operator proto.Keyring // trusted_keys
	control  proto.Keyring // trusted_keys ∪ controller_keys
}

func newPins(trusted, controller []string) pins {
	op, _ := proto.NewKeyring(trusted...) // Validate has parsed both lists
	ctl, _ := proto.NewKeyring(append(append([]string{}, controller...), trusted...)...)
	return pins{operator: op, control: ctl}
}

// none: the node pins no key at all and accepts unsigned messages of
// every kind (warned at start; docs/protocol.md).
func (p pins) none() bool { return len(p.control) == 0 }

// controllerKeyError is a Desired with a valid signature by a key pinned
// only for Gates and Commands.
type controllerKeyError struct{ id string }

func (e controllerKeyError) Error() string {
	return fmt.Sprintf("signed by controller key %q, which may sign gates and commands only: a Desired needs an operator key (trusted_keys)", e.id)
}

func (e controllerKeyError) Unwrap() error { return proto.ErrUnknownKey }

// errNoOperatorKey: controller keys are pinned but no operator key, so no
// Desired can be trusted (docs/protocol.md: a node that pins any key never
// accepts an unsigned Desired).
var errNoOperatorKey = errors.New("no operator key pinned (trusted_keys is empty, and controller_keys sign gates and commands only): this node accepts no desired state until one is")

// verifyDesired accepts a Desired signed by an operator key only.
func (p pins) verifyDesired(d *proto.Desired) error {
	if p.none() {
		return nil
	}
	err := errNoOperatorKey
	if len(p.operator) > 0 {
		err = p.operator.Verify(d)
	}
	if _, ctl := p.control[d.KeyID]; err != nil && ctl && len(d.Sig) > 0 {
		if err := p.control.Verify(d); err != nil {
			return err // forged
		}
		return controllerKeyError{id: d.KeyID}
	}
	return err
}

// verifyControl accepts a Gate or Command signed by a controller or an
// operator key.
func (p pins) verifyControl(m proto.Signable) error {
	if p.none() {
		return nil
	}
	return p.control.Verify(m)
}

// report names the pinned keys for the node's status (NodeStatus.Pins):
// the operator keys, and the controller keys that are not also operator
// keys, each list sorted; empty lists when the node pins none. nil (not
// reported, as an older labd) when a list is longer than a status may
// carry: a controller then cannot tell, rather than being told wrongly
// that a key is not pinned.
func (p pins) report() *proto.KeyPins {
	r := &proto.KeyPins{Operator: []string{}, Controller: []string{}}
	for id := range p.operator {
		r.Operator = append(r.Operator, id)
	}
	for id := range p.control {
		if _, op := p.operator[id]; !op {
			r.Controller = append(r.Controller, id)
		}
	}
	if len(r.Operator) > proto.MaxPinnedKeys || len(r.Controller) > proto.MaxPinnedKeys {
		return nil
	}
	slices.Sort(r.Operator)
	slices.Sort(r.Controller)
	return r
}
