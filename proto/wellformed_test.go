package proto

import (
	"bytes"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestWellFormed(t *testing.T) {
	good, err := msgpack.Marshal(map[string]any{"a": []any{1, "x", 2.5, nil, true, []byte{1, 2}, map[string]int{"b": -3}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"nested map", good, true},
		{"fixint", []byte{0x05}, true},
		{"empty", nil, false},
		{"trailing", append(append([]byte{}, good...), 0x00), false},
		{"never used byte", []byte{0xc1}, false},
		{"array32 of 2^32-1 in 5 bytes", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}, false},
		{"map16 claiming 12336 pairs", []byte{0xde, 0x30, 0x30, 0x01, 0x02}, false},
		{"str32 claiming 1.5 GB", []byte{0xdb, 0x5b, 0xef, 0x5d, 0x96, 'a'}, false},
		{"ext32 claiming 1.5 GB", []byte{0xc9, 0x5b, 0xef, 0x5d, 0x96, 0x01, 'a'}, false},
		{"fixext16 short", []byte{0xd8, 0x01, 0x00}, false},
		{"fixext4", []byte{0xd6, 0x01, 1, 2, 3, 4}, true},
		{"float64 short", []byte{0xcb, 0, 0, 0}, false},
		{"depth 32", append(bytes.Repeat([]byte{0x91}, 32), 0x00), true},
		{"depth 33", append(bytes.Repeat([]byte{0x91}, 33), 0x00), false},
	} {
		err := wellFormed(tc.b)
		if (err == nil) != tc.ok {
			t.Errorf("%s: wellFormed(% x) = %v, want ok=%v", tc.name, tc.b, err, tc.ok)
		}
	}
}

// A declared length larger than the payload must fail before the decoder
// allocates for it.
func TestDecodeDoesNotAllocateFromDeclaredLengths(t *testing.T) {
	b := []byte{0x82, 0xa1, 'v', 0x01, 0xa4, 'k', 'i', 'n', 'd', 0xdd, 0xff, 0xff, 0xff, 0xff}
	allocs := testing.AllocsPerRun(20, func() {
		if err := Decode(b, new(RolloutState)); !IsInvalid(err) {
			t.Fatalf("Decode = %v, want an invalid-payload error", err)
		}
	})
	if allocs > 20 {
		t.Errorf("%.0f allocations for a 14-byte hostile payload", allocs)
	}
}
