package proto

// Version is the schema version carried in every envelope (field "v").
// Decoders reject any other value with ErrUnknownVersion.
//
// Bump this number and document what is new:
//
//	1: first version: desired, gate, command, status, presence, event, rollout.
//	   Later optional fields, absent when empty so that every other
//	   message encodes as before (no bump): rollout.halted,
//	   rollout.omitted; event.cmd, event.op, event.outcome (command
//	   acknowledgements, docs/protocol.md); status.recipient,
//	   status.secrets and the secret kind (docs/secrets.md).
//	   Also status.host_keys (labctl inventory --known-hosts).
const Version = 1

// ContentType is the MQTT v5 content type of every lab payload.
const ContentType = "application/msgpack"

// DefaultPrefix is the topic prefix used when none is configured.
const DefaultPrefix = "lab/v1"

// Size limits per message kind, in bytes. A payload over its limit is refused
// before it is decoded (ErrTooLarge). The broker's maximum packet size must be
// at least MaxPayload.
var maxSize = map[Kind]int{
	KindDesired:  16 << 10,
	KindGate:     4 << 10,
	KindCommand:  64 << 10,
	KindStatus:   64 << 10,
	KindPresence: 1 << 10,
	KindEvent:    16 << 10,
	KindRollout:  1 << 20,
	KindSecret:   256 << 10,
}

// MaxPayload is the largest payload of any kind.
const MaxPayload = 1 << 20

// MaxSize returns the size limit of a message kind (0 for an unknown kind).
func MaxSize(k Kind) int { return maxSize[k] }
