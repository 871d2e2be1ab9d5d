package proto

import (
	"crypto/rand"
	"encoding/hex"
	"slices"
	"time"
)

// Kind names the message type in an envelope.
type Kind string

// The message kinds.
const (
	KindDesired  Kind = "desired"
	KindGate     Kind = "gate"
	KindCommand  Kind = "command"
	KindStatus   Kind = "status"
	KindPresence Kind = "presence"
	KindEvent    Kind = "event"
	KindRollout  Kind = "rollout"
	KindSecret   Kind = "secret"
)

// Envelope is the header of every message. TS is Unix milliseconds.
type Envelope struct {
	V    int    `msgpack:"v" json:"v"`
	Kind Kind   `msgpack:"kind" json:"kind"`
	ID   string `msgpack:"id" json:"id"`
	TS   int64  `msgpack:"ts" json:"ts"`
	From string `msgpack:"from" json:"from"`
}

// Header returns the envelope; it makes every message a Message.
func (e *Envelope) Header() *Envelope { return e }

// Message is implemented by every message type.
type Message interface {
	Header() *Envelope
	Validate() error
}

// Timeouts bound a node's phases, in seconds; 0 means the node's default.
type Timeouts struct {
	Fetch    uint32 `msgpack:"fetch" json:"fetch"`
	Activate uint32 `msgpack:"activate" json:"activate"`
	Confirm  uint32 `msgpack:"confirm" json:"confirm"`
}

// Desired is the what: the system a node must run. Retained on
// <p>/node/<node>/desired and signed by the operator's key.
type Desired struct {
	Envelope `msgpack:",inline"`
	Node     string       `msgpack:"node" json:"node"`
	Rollout  string       `msgpack:"rollout" json:"rollout"`
	Gen      uint64       `msgpack:"gen" json:"gen"` // monotonic per node
	Toplevel string       `msgpack:"toplevel" json:"toplevel"`
	Action   Action       `msgpack:"action" json:"action"`
	Reboot   RebootPolicy `msgpack:"reboot" json:"reboot"`
	Wave     int          `msgpack:"wave" json:"wave"` // 0 = act at once, else wait for a Gate
	Checks   []string     `msgpack:"checks" json:"checks"`
	Timeouts Timeouts     `msgpack:"timeouts" json:"timeouts"`
	Expires  int64        `msgpack:"expires" json:"expires"` // Unix ms; 0 = never
	KeyID    string       `msgpack:"key_id" json:"key_id"`
	Sig      []byte       `msgpack:"sig" json:"sig,omitempty"`
}

// Gate is the when: which wave of a rollout may act. Retained on
// <p>/group/<group>/gate; one publish fans out to the group.
type Gate struct {
	Envelope `msgpack:",inline"`
	Group    string    `msgpack:"group" json:"group"`
	Rollout  string    `msgpack:"rollout" json:"rollout"`
	OpenWave int       `msgpack:"open_wave" json:"open_wave"`
	State    GateState `msgpack:"state" json:"state"`
	Seq      uint64    `msgpack:"seq" json:"seq"` // monotonic per group
	KeyID    string    `msgpack:"key_id" json:"key_id"`
	Sig      []byte    `msgpack:"sig" json:"sig,omitempty"`
}

// Command is a one-shot, expiring hint: reboot, check, cancel, rollback,
// resync. Targets empty means every subscriber of the topic.
type Command struct {
	Envelope `msgpack:",inline"`
	Op       Op                `msgpack:"op" json:"op"`
	Rollout  string            `msgpack:"rollout" json:"rollout"`
	Targets  []string          `msgpack:"targets" json:"targets"`
	Params   map[string]string `msgpack:"params" json:"params"`
	Expires  int64             `msgpack:"expires" json:"expires"` // Unix ms; required
	KeyID    string            `msgpack:"key_id" json:"key_id"`
	Sig      []byte            `msgpack:"sig" json:"sig,omitempty"`
}

// Execution is the state of a node's latest execution.
type Execution struct {
	Rollout  string    `msgpack:"rollout" json:"rollout"`
	Gen      uint64    `msgpack:"gen" json:"gen"`
	Toplevel string    `msgpack:"toplevel" json:"toplevel"`
	Action   Action    `msgpack:"action" json:"action"`
	State    ExecState `msgpack:"state" json:"state"`
	Attempt  int       `msgpack:"attempt" json:"attempt"`
	Since    int64     `msgpack:"since" json:"since"` // Unix ms
	Error    string    `msgpack:"error" json:"error,omitempty"`
}

// CheckResult is the last result of one local health check.
type CheckResult struct {
	OK     bool   `msgpack:"ok" json:"ok"`
	Detail string `msgpack:"detail" json:"detail,omitempty"`
	At     int64  `msgpack:"at" json:"at"`
}

// NodeStatus is a node's retained status, republished on every connect and
// on every transition.
type NodeStatus struct {
	Envelope     `msgpack:",inline"`
	Node         string       `msgpack:"node" json:"node"`
	Groups       []string     `msgpack:"groups" json:"groups"`
	Execution    Execution    `msgpack:"execution" json:"execution"`
	AppliedGen   uint64       `msgpack:"applied_gen" json:"applied_gen"`
	Current      string       `msgpack:"current" json:"current"`
	Booted       string       `msgpack:"booted" json:"booted"`
	Previous     string       `msgpack:"previous" json:"previous"`
	Checks       CheckResults `msgpack:"checks" json:"checks"`
	NeedsReboot  bool         `msgpack:"needs_reboot" json:"needs_reboot"`
	NixOSVersion string       `msgpack:"nixos_version" json:"nixos_version"`
	LabdVersion  string       `msgpack:"labd_version" json:"labd_version"`
	BootID       string       `msgpack:"boot_id" json:"boot_id"`
	Machine      Machine      `msgpack:"machine" json:"machine"`
	Problems     []string     `msgpack:"problems" json:"problems,omitempty"` // what is wrong on the node itself (e.g. its state cannot be saved)
	UpdatedAt    int64        `msgpack:"updated_at" json:"updated_at"`       // Unix ms
	// Pins names the keys the node pins, by power (DESIGN §9, "two keys,
	// two powers"), so that a controller can tell before it starts a
	// rollout whether the node would take its gates and commands
	// (AcceptsGateKey). nil (absent on the wire) = not reported: a labd
	// older than this field. Non-nil with both lists empty = the node pins
	// no key and accepts unsigned messages of every kind. Absent when nil,
	// so that an old node's status encodes as before.
	Pins *KeyPins `msgpack:"pins,omitempty" json:"pins,omitempty"`
	// Connect is the run of failed connection attempts that preceded the
	// node's current connection (e.g. refused for an hour with a bad
	// password until someone fixed it); absent when it connected at the
	// first try.
	Connect *ConnectTrouble `msgpack:"connect,omitempty" json:"connect,omitempty"`
	// Generations are the newest generations of the node's system
	// profile (at most MaxReportedGenerations), oldest first: its history
	// of systems, which a rollback goes back along. Absent when unknown.
	Generations []Generation `msgpack:"generations,omitempty" json:"generations,omitempty"`
	// Recipient is the node's age recipient, the public key every Secret
	// for it is encrypted to: "ssh-ed25519 AAAA…" (its SSH host key) or
	// "age1…" (an identity labd made). Absent when unknown (an older
	// labd), so that its status encodes as before.
	Recipient string `msgpack:"recipient,omitempty" json:"recipient,omitempty"`
	// Secrets are the node's secrets by name (sorted), at most
	// MaxReportedSecrets: version, state and error, never the content.
	// Absent when it has none.
	Secrets []SecretState `msgpack:"secrets,omitempty" json:"secrets,omitempty"`
	// HostKeys are the machine's SSH host public keys, "<type> <base64>"
	// without comment (at most MaxHostKeys, ed25519 first), for
	// `labctl inventory --known-hosts`. Separate from Recipient, which
	// is the one key secrets are encrypted to. Absent when none was
	// found, so that an older labd's status encodes as before.
	HostKeys []string `msgpack:"host_keys,omitempty" json:"host_keys,omitempty"`
}

// MaxReportedGenerations is how many profile generations a status lists.
const MaxReportedGenerations = 8

// Generation is one generation of a node's system profile.
type Generation struct {
	Number   int    `msgpack:"n" json:"n"`
	Toplevel string `msgpack:"toplevel" json:"toplevel"`
	Created  int64  `msgpack:"created" json:"created"` // Unix ms
	Current  bool   `msgpack:"current,omitempty" json:"current,omitempty"`
}

// ConnectTrouble is a run of failed connection attempts, as a node
// reports it once it is connected again.
type ConnectTrouble struct {
	Attempts int    `msgpack:"attempts" json:"attempts"`
	Since    int64  `msgpack:"since" json:"since"` // Unix ms, the first failure
	Until    int64  `msgpack:"until" json:"until"` // Unix ms, the last failure
	Error    string `msgpack:"error" json:"error"` // the last failure, in words
}

// MaxPinnedKeys bounds each list of a KeyPins.
const MaxPinnedKeys = 32

// KeyPins are the ids of the public keys a node pins (labd's trusted_keys
// and controller_keys), each list sorted, each id once.
type KeyPins struct {
	// Operator: trusted_keys. They sign Desired, and Gates and Commands too.
	Operator []string `msgpack:"operator" json:"operator"`
	// Controller: the controller_keys that are not also operator keys.
	// They sign Gates and Commands only.
	Controller []string `msgpack:"controller" json:"controller"`
}

// None reports whether p pins no key: such a node accepts unsigned
// messages, and any signature, on every kind.
func (p *KeyPins) None() bool { return len(p.Operator) == 0 && len(p.Controller) == 0 }

// GateKeys returns the ids a Gate or Command may be signed with:
// Operator ∪ Controller, sorted, each once (empty when p pins none, and
// then any key, or none, is accepted: see None).
func (p *KeyPins) GateKeys() []string {
	ids := slices.Concat(p.Operator, p.Controller)
	slices.Sort(ids)
	return slices.Compact(ids)
}

// AcceptsGateKey reports whether the node would accept a Gate or Command
// signed by key id ("" = unsigned): yes if it pins no key at all, else if
// id is among its operator or controller keys. known is false when the
// status does not say (s nil, or a labd older than NodeStatus.Pins);
// accepts is then false and means nothing.
func (s *NodeStatus) AcceptsGateKey(id string) (accepts, known bool) {
	if s == nil || s.Pins == nil {
		return false, false
	}
	return s.Pins.None() || (id != "" && slices.Contains(s.Pins.GateKeys(), id)), true
}

// AcceptsDesiredKey is AcceptsGateKey for a Desired: only operator keys
// sign one, so a node that pins controller keys alone accepts none.
func (s *NodeStatus) AcceptsDesiredKey(id string) (accepts, known bool) {
	if s == nil || s.Pins == nil {
		return false, false
	}
	return s.Pins.None() || (id != "" && slices.Contains(s.Pins.Operator, id)), true
}

// Machine is what a node declares about itself for rollout planning (the
// lab.machine options of its NixOS configuration).
type Machine struct {
	Role         string   `msgpack:"role" json:"role,omitempty"`
	RebootOrder  int      `msgpack:"reboot_order" json:"reboot_order"` // lower goes first
	Dependencies []string `msgpack:"dependencies" json:"dependencies"` // machines that must be healthy first
	RebootDelay  uint32   `msgpack:"reboot_delay" json:"reboot_delay"` // seconds to wait after this machine rebooted
	Criticality  string   `msgpack:"criticality" json:"criticality,omitempty"`
}

// Validate checks the declared metadata.
func (m Machine) Validate() error {
	if err := ids("machine.dependencies", m.Dependencies, maxGroups); err != nil {
		return err
	}
	for name, v := range map[string]string{"machine.role": m.Role, "machine.criticality": m.Criticality} {
		if v != "" {
			if err := ValidID(v); err != nil {
				return field(name, err)
			}
		}
	}
	if m.RebootOrder < -1_000_000 || m.RebootOrder > 1_000_000 {
		return invalid("machine.reboot_order", "%d is out of range", m.RebootOrder)
	}
	return nil
}

// Presence is a node's retained online flag; the offline copy is the node's
// MQTT Last Will.
type Presence struct {
	Envelope `msgpack:",inline"`
	Node     string `msgpack:"node" json:"node"`
	Online   bool   `msgpack:"online" json:"online"`
	Since    int64  `msgpack:"since" json:"since"` // Unix ms
}

// Event is one execution transition of a node, or its acknowledgement of
// a Command: then Cmd, Op and Outcome are set (all three, or none) and
// Detail says why a command was refused or failed.
type Event struct {
	Envelope `msgpack:",inline"`
	Node     string    `msgpack:"node" json:"node"`
	Rollout  string    `msgpack:"rollout" json:"rollout"`
	Gen      uint64    `msgpack:"gen" json:"gen"`
	Prev     ExecState `msgpack:"from_state" json:"from_state"`
	State    ExecState `msgpack:"to_state" json:"to_state"`
	Detail   string    `msgpack:"detail" json:"detail,omitempty"`
	// Cmd is the envelope id of the acknowledged command. The three
	// fields are absent on other events, so that their encoding is
	// unchanged.
	Cmd     string     `msgpack:"cmd,omitempty" json:"cmd,omitempty"`
	Op      Op         `msgpack:"op,omitempty" json:"op,omitempty"`
	Outcome CmdOutcome `msgpack:"outcome,omitempty" json:"outcome,omitempty"`
}

// NodeProgress is one target's line in a RolloutState.
type NodeProgress struct {
	Wave     int       `msgpack:"wave" json:"wave"`
	Gen      uint64    `msgpack:"gen" json:"gen"`
	Toplevel string    `msgpack:"toplevel" json:"toplevel"`
	State    ExecState `msgpack:"state" json:"state"`
	Error    string    `msgpack:"error" json:"error,omitempty"`
	Online   bool      `msgpack:"online" json:"online"`
}

// Counters summarise a rollout's targets.
type Counters struct {
	Total      int `msgpack:"total" json:"total"`
	Succeeded  int `msgpack:"succeeded" json:"succeeded"`
	Failed     int `msgpack:"failed" json:"failed"`
	RolledBack int `msgpack:"rolled_back" json:"rolled_back"`
	Running    int `msgpack:"running" json:"running"`
	Pending    int `msgpack:"pending" json:"pending"`     // not started: offline, asleep or waiting for a gate
	Cancelled  int `msgpack:"cancelled" json:"cancelled"` // not run: the rollout was halted or cancelled first
}

// RolloutState is a rollout's retained state on <p>/rollout/<id>.
type RolloutState struct {
	Envelope  `msgpack:",inline"`
	Rollout   string          `msgpack:"rollout" json:"rollout"`
	CreatedAt int64           `msgpack:"created_at" json:"created_at"`
	Strategy  string          `msgpack:"strategy" json:"strategy"`
	Action    Action          `msgpack:"action" json:"action"`
	State     RolloutPhase    `msgpack:"state" json:"state"`
	OpenWave  int             `msgpack:"open_wave" json:"open_wave"`
	Waves     [][]string      `msgpack:"waves" json:"waves"`
	Nodes     NodeProgressMap `msgpack:"nodes" json:"nodes"`
	Counters  Counters        `msgpack:"counters" json:"counters"`
	Reason    string          `msgpack:"reason" json:"reason,omitempty"`
	// Halted says the rollout stopped opening waves early (its failure
	// threshold, or a cancel); Reason says why. Absent when false.
	Halted bool `msgpack:"halted,omitempty" json:"halted,omitempty"`
	// Omitted counts the targets left out of Nodes so that the message
	// stays under its size limit (very large rollouts): succeeded ones
	// first, then the rest of those without trouble. Every node's own
	// retained status has the same facts; Counters count every target.
	// Absent when 0, so that the encoding of every other state is unchanged.
	Omitted int `msgpack:"omitted,omitempty" json:"omitted,omitempty"`
}

// Stamp fills the envelope's id (random), timestamp and sender.
func (e *Envelope) Stamp(from string, now time.Time) {
	e.ID, e.TS, e.From = NewID(), now.UnixMilli(), from
}

// NewID returns a random 128-bit identifier in hex.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
