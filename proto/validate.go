package proto

import (
	"fmt"
)

// Bounds on list and string fields, so that a valid message is also a small one.
const (
	maxChecks   = 64
	maxTargets  = 10000
	maxGroups   = 64
	maxText     = 4096 // error, detail, reason strings
	maxParams   = 32
	maxTimeout  = 7 * 24 * 3600
	maxMsgIDLen = 128
)

func (e *Envelope) validate(kind Kind) error {
	if e.V != Version {
		return invalid("v", "version %d, want %d", e.V, Version)
	}
	if e.Kind != kind {
		return invalid("kind", "%q, want %q", e.Kind, kind)
	}
	if e.ID == "" || len(e.ID) > maxMsgIDLen {
		return invalid("id", "must be 1..%d characters", maxMsgIDLen)
	}
	if e.TS < 0 {
		return invalid("ts", "negative")
	}
	if len(e.From) > maxMsgIDLen {
		return invalid("from", "longer than %d", maxMsgIDLen)
	}
	return nil
}

func ids(name string, list []string, max int) error {
	if len(list) > max {
		return invalid(name, "%d entries, at most %d", len(list), max)
	}
	for i, s := range list {
		if err := ValidID(s); err != nil {
			return field(fmt.Sprintf("%s[%d]", name, i), err)
		}
	}
	return nil
}

func text(name, s string) error {
	if len(s) > maxText {
		return invalid(name, "%d bytes, at most %d", len(s), maxText)
	}
	return nil
}

// Validate checks every field of a Desired.
func (d *Desired) Validate() error {
	if err := d.Envelope.validate(KindDesired); err != nil {
		return err
	}
	switch {
	case ValidID(d.Node) != nil:
		return field("node", ValidID(d.Node))
	case ValidID(d.Rollout) != nil:
		return field("rollout", ValidID(d.Rollout))
	case d.Gen == 0:
		return invalid("gen", "must be > 0")
	case ValidStorePath(d.Toplevel) != nil:
		return field("toplevel", ValidStorePath(d.Toplevel))
	case !d.Action.Valid():
		return invalid("action", "%q, want switch, boot or test", d.Action)
	case !d.Reboot.Valid():
		return invalid("reboot", "%q, want never, if-needed or always", d.Reboot)
	case d.Wave < 0 || d.Wave > 1000:
		return invalid("wave", "%d out of range 0..1000", d.Wave)
	case d.Expires < 0:
		return invalid("expires", "negative")
	case len(d.Sig) > 128:
		return invalid("sig", "%d bytes", len(d.Sig))
	}
	if err := d.Timeouts.validate(); err != nil {
		return err
	}
	if err := ids("checks", d.Checks, maxChecks); err != nil {
		return err
	}
	return keyID(d.KeyID)
}

func (t Timeouts) validate() error {
	for name, v := range map[string]uint32{"fetch": t.Fetch, "activate": t.Activate, "confirm": t.Confirm} {
		if v > maxTimeout {
			return invalid("timeouts."+name, "%d s is more than a week", v)
		}
	}
	return nil
}

func keyID(k string) error {
	if k == "" {
		return nil
	}
	return field("key_id", validKeyID(k))
}

// Validate checks every field of a Gate.
func (g *Gate) Validate() error {
	if err := g.Envelope.validate(KindGate); err != nil {
		return err
	}
	switch {
	case ValidID(g.Group) != nil:
		return field("group", ValidID(g.Group))
	case ValidID(g.Rollout) != nil:
		return field("rollout", ValidID(g.Rollout))
	case g.OpenWave < 0 || g.OpenWave > 1000:
		return invalid("open_wave", "%d out of range 0..1000", g.OpenWave)
	case !g.State.Valid():
		return invalid("state", "%q, want running, paused or cancelled", g.State)
	}
	return keyID(g.KeyID)
}

// Validate checks every field of a Command.
func (c *Command) Validate() error {
	if err := c.Envelope.validate(KindCommand); err != nil {
		return err
	}
	if !c.Op.Valid() {
		return invalid("op", "%q is not a known operation", c.Op)
	}
	if c.Rollout != "" {
		if err := ValidID(c.Rollout); err != nil {
			return field("rollout", err)
		}
	}
	if c.Expires <= 0 {
		return invalid("expires", "a command must expire")
	}
	if err := ids("targets", c.Targets, maxTargets); err != nil {
		return err
	}
	if len(c.Params) > maxParams {
		return invalid("params", "%d entries, at most %d", len(c.Params), maxParams)
	}
	for k, v := range c.Params {
		if err := text("params."+k, k+v); err != nil {
			return err
		}
	}
	return keyID(c.KeyID)
}

func (e *Execution) validate() error {
	if e.Rollout != "" {
		if err := ValidID(e.Rollout); err != nil {
			return field("execution.rollout", err)
		}
	}
	if e.Toplevel != "" {
		if err := ValidStorePath(e.Toplevel); err != nil {
			return field("execution.toplevel", err)
		}
	}
	if e.Action != "" && !e.Action.Valid() {
		return invalid("execution.action", "%q", e.Action)
	}
	if e.State != "" && !e.State.Valid() {
		return invalid("execution.state", "%q is not a known state", e.State)
	}
	return text("execution.error", e.Error)
}

func optionalStorePath(name, p string) error {
	if p == "" {
		return nil
	}
	return field(name, ValidStorePath(p))
}

// Validate checks every field of a NodeStatus.
func (s *NodeStatus) Validate() error {
	if err := s.Envelope.validate(KindStatus); err != nil {
		return err
	}
	if err := ValidID(s.Node); err != nil {
		return field("node", err)
	}
	if err := ids("groups", s.Groups, maxGroups); err != nil {
		return err
	}
	if err := s.Execution.validate(); err != nil {
		return err
	}
	if err := s.Machine.Validate(); err != nil {
		return err
	}
	if len(s.Problems) > 8 {
		return invalid("problems", "%d entries, at most 8", len(s.Problems))
	}
	for _, p := range s.Problems {
		if err := text("problems", p); err != nil {
			return err
		}
	}
	if c := s.Connect; c != nil {
		if c.Attempts < 1 || c.Since <= 0 || c.Until < c.Since {
			return invalid("connect", "attempts %d from %d to %d: want at least one attempt, in time order", c.Attempts, c.Since, c.Until)
		}
		if err := text("connect.error", c.Error); err != nil {
			return err
		}
	}
	for name, p := range map[string]string{"current": s.Current, "booted": s.Booted, "previous": s.Previous} {
		if err := optionalStorePath(name, p); err != nil {
			return err
		}
	}
	if len(s.Checks) > maxChecks {
		return invalid("checks", "%d entries, at most %d", len(s.Checks), maxChecks)
	}
	for name, c := range s.Checks {
		if err := ValidID(name); err != nil {
			return field("checks", err)
		}
		if err := text("checks."+name+".detail", c.Detail); err != nil {
			return err
		}
	}
	for name, v := range map[string]string{"nixos_version": s.NixOSVersion, "labd_version": s.LabdVersion, "boot_id": s.BootID} {
		if len(v) > 128 {
			return invalid(name, "longer than 128")
		}
	}
	if s.Recipient != "" {
		if err := ValidRecipient(s.Recipient); err != nil {
			return field("recipient", err)
		}
	}
	if err := validSecretStates(s.Secrets); err != nil {
		return err
	}
	if err := validHostKeys(s.HostKeys); err != nil {
		return err
	}
	return s.Pins.validate()
}

func (p *KeyPins) validate() error {
	if p == nil {
		return nil
	}
	if err := keyIDs("pins.operator", p.Operator); err != nil {
		return err
	}
	return keyIDs("pins.controller", p.Controller)
}

// keyIDs checks a list of key ids (as ParsePublicKey accepts them).
func keyIDs(name string, list []string) error {
	if len(list) > MaxPinnedKeys {
		return invalid(name, "%d entries, at most %d", len(list), MaxPinnedKeys)
	}
	for i, k := range list {
		if err := validKeyID(k); err != nil {
			return field(fmt.Sprintf("%s[%d]", name, i), err)
		}
	}
	return nil
}

// Validate checks every field of a Presence.
func (p *Presence) Validate() error {
	if err := p.Envelope.validate(KindPresence); err != nil {
		return err
	}
	return field("node", ValidID(p.Node))
}

// Validate checks every field of an Event.
func (e *Event) Validate() error {
	if err := e.Envelope.validate(KindEvent); err != nil {
		return err
	}
	if err := ValidID(e.Node); err != nil {
		return field("node", err)
	}
	if e.Rollout != "" {
		if err := ValidID(e.Rollout); err != nil {
			return field("rollout", err)
		}
	}
	if !e.Prev.Valid() {
		return invalid("from_state", "%q is not a known state", e.Prev)
	}
	if !e.State.Valid() {
		return invalid("to_state", "%q is not a known state", e.State)
	}
	if e.Cmd != "" || e.Op != "" || e.Outcome != "" {
		switch {
		case e.Cmd == "" || len(e.Cmd) > maxMsgIDLen:
			return invalid("cmd", "a command acknowledgement names the command id, 1..%d characters", maxMsgIDLen)
		case !e.Op.Valid():
			return invalid("op", "%q is not a known operation", e.Op)
		case !e.Outcome.Valid():
			return invalid("outcome", "%q, want accepted, refused or failed", e.Outcome)
		}
	}
	return text("detail", e.Detail)
}

// Validate checks every field of a RolloutState.
func (r *RolloutState) Validate() error {
	if err := r.Envelope.validate(KindRollout); err != nil {
		return err
	}
	if err := ValidID(r.Rollout); err != nil {
		return field("rollout", err)
	}
	if r.Action != "" && !r.Action.Valid() {
		return invalid("action", "%q", r.Action)
	}
	if !r.State.Valid() {
		return invalid("state", "%q is not a rollout state", r.State)
	}
	for i, w := range r.Waves {
		if err := ids(fmt.Sprintf("waves[%d]", i), w, maxTargets); err != nil {
			return err
		}
	}
	if len(r.Nodes) > maxTargets {
		return invalid("nodes", "%d entries, at most %d", len(r.Nodes), maxTargets)
	}
	for n, p := range r.Nodes {
		if err := ValidID(n); err != nil {
			return field("nodes", err)
		}
		if p.State != "" && !p.State.Valid() {
			return invalid("nodes."+n+".state", "%q is not a known state", p.State)
		}
		if err := text("nodes."+n+".error", p.Error); err != nil {
			return err
		}
	}
	return text("reason", r.Reason)
}
