package proto

import "errors"

// Sentinel errors returned (wrapped, with detail) by decoders, validators and
// signature checks. Test them with errors.Is.
var (
	// ErrMalformed: the bytes are not a msgpack map of the expected shape.
	ErrMalformed = errors.New("malformed message")
	// ErrUnknownVersion: the envelope's schema version is not Version.
	ErrUnknownVersion = errors.New("unknown schema version")
	// ErrWrongKind: the envelope names another message kind than expected.
	ErrWrongKind = errors.New("wrong message kind")
	// ErrTooLarge: the payload exceeds the limit of its kind.
	ErrTooLarge = errors.New("message too large")
	// ErrInvalidField: a field is missing or has an invalid value; the
	// wrapping error names the field.
	ErrInvalidField = errors.New("invalid field")
	// ErrInvalidTopic: a topic or an identifier inside it is not valid.
	ErrInvalidTopic = errors.New("invalid topic")
	// ErrUnsigned: a message that must be signed carries no signature.
	ErrUnsigned = errors.New("message is not signed")
	// ErrUnknownKey: the signature's key id is not among the trusted keys.
	ErrUnknownKey = errors.New("signed by an unknown key")
	// ErrBadSignature: the signature does not verify.
	ErrBadSignature = errors.New("bad signature")
	// ErrExpired: the message's expiry time has passed.
	ErrExpired = errors.New("message expired")
)
