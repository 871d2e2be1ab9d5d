package proto

import (
	"slices"

	"github.com/vmihailenco/msgpack/v5"
)

// msgpack's encoder sorts the keys of map[string]string and
// map[string]any only; these named map types encode with sorted keys
// themselves, so that every message has exactly one encoding.

// CheckResults maps a check name to its last result.
type CheckResults map[string]CheckResult

// NodeProgressMap maps a node to its progress in a rollout.
type NodeProgressMap map[string]NodeProgress

// EncodeMsgpack encodes the map with sorted keys.
func (m CheckResults) EncodeMsgpack(e *msgpack.Encoder) error { return encodeSorted(e, m) }

// EncodeMsgpack encodes the map with sorted keys.
func (m NodeProgressMap) EncodeMsgpack(e *msgpack.Encoder) error { return encodeSorted(e, m) }

func encodeSorted[V any](e *msgpack.Encoder, m map[string]V) error {
	if m == nil {
		return e.EncodeNil()
	}
	if err := e.EncodeMapLen(len(m)); err != nil {
		return err
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := e.EncodeString(k); err != nil {
			return err
		}
		if err := e.Encode(m[k]); err != nil {
			return err
		}
	}
	return nil
}
