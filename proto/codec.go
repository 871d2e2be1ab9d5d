package proto

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Encode returns the canonical msgpack encoding of m: struct fields in
// declaration order as a map, smallest integer encodings, sorted map keys.
// The same message always encodes to the same bytes, which is what
// signatures are computed over.
func Encode(m Message) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	enc.UseCompactInts(true)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.Header().Kind, err)
	}
	return buf.Bytes(), nil
}

// Seal fills the envelope's version and kind and encodes m. It validates m
// first, so nothing invalid is ever published.
func Seal(m Message) ([]byte, error) {
	h := m.Header()
	h.V, h.Kind = Version, kindOf(m)
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", h.Kind, err)
	}
	b, err := Encode(m)
	if err != nil {
		return nil, err
	}
	if len(b) > maxSize[h.Kind] {
		return nil, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, h.Kind, len(b), maxSize[h.Kind])
	}
	return b, nil
}

func kindOf(m Message) Kind {
	switch m.(type) {
	case *Desired:
		return KindDesired
	case *Gate:
		return KindGate
	case *Command:
		return KindCommand
	case *NodeStatus:
		return KindStatus
	case *Presence:
		return KindPresence
	case *Event:
		return KindEvent
	case *RolloutState:
		return KindRollout
	case *Secret:
		return KindSecret
	}
	return m.Header().Kind
}

// peek is the part of the envelope read before the full decode.
type peek struct {
	V    int  `msgpack:"v"`
	Kind Kind `msgpack:"kind"`
}

// Decode decodes b into m (a pointer to a zero message of the expected
// kind), strictly: size limit of the kind, schema version, kind, no unknown
// fields, then m.Validate. Errors wrap ErrTooLarge, ErrMalformed,
// ErrUnknownVersion, ErrWrongKind or ErrInvalidField.
func Decode(b []byte, m Message) error {
	want := kindOf(m)
	if limit := maxSize[want]; len(b) > limit {
		return fmt.Errorf("%w: %s payload is %d bytes, limit %d", ErrTooLarge, want, len(b), limit)
	}
	if err := wellFormed(b); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMalformed, want, err)
	}
	var p peek
	if err := msgpack.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if p.V != Version {
		return fmt.Errorf("%w: got v=%d, this build speaks v=%d", ErrUnknownVersion, p.V, Version)
	}
	if p.Kind != want {
		return fmt.Errorf("%w: got %q, want %q", ErrWrongKind, p.Kind, want)
	}
	r := bytes.NewReader(b)
	dec := msgpack.NewDecoder(r)
	dec.DisallowUnknownFields(true)
	if err := dec.Decode(m); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMalformed, want, err)
	}
	if r.Len() != 0 {
		return fmt.Errorf("%w: %s: %d trailing bytes", ErrMalformed, want, r.Len())
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("%s: %w", want, err)
	}
	return nil
}

// PeekKind returns the kind named in a payload's envelope, for routing
// payloads whose topic does not say. It does not validate the rest.
func PeekKind(b []byte) (Kind, error) {
	if len(b) > MaxPayload {
		return "", fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
	}
	if err := wellFormed(b); err != nil {
		return "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var p peek
	if err := msgpack.Unmarshal(b, &p); err != nil {
		return "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if p.V != Version {
		return "", fmt.Errorf("%w: got v=%d", ErrUnknownVersion, p.V)
	}
	return p.Kind, nil
}

// IsInvalid reports whether err is any of the errors a bad payload causes
// (as opposed to a local failure).
func IsInvalid(err error) bool {
	for _, e := range []error{ErrMalformed, ErrUnknownVersion, ErrWrongKind, ErrTooLarge, ErrInvalidField,
		ErrUnsigned, ErrUnknownKey, ErrBadSignature, ErrExpired} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
