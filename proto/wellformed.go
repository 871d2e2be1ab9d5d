package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// maxDepth bounds the nesting of arrays and maps in a payload. Real
// messages nest three or four levels deep.
const maxDepth = 32

var errShort = errors.New("declared length exceeds the payload")

// wellFormed checks that b is exactly one msgpack value whose every
// declared length fits in the bytes that follow it and whose nesting is at
// most maxDepth, before any decoder sees it. msgpack decoders preallocate
// from declared lengths (up to a million elements per slice or map), so
// without this check a 10-byte payload could make a node allocate hundreds
// of megabytes.
func wellFormed(b []byte) error {
	w := walker{b: b}
	if err := w.value(0); err != nil {
		return err
	}
	if w.off != len(b) {
		return fmt.Errorf("%d trailing bytes", len(b)-w.off)
	}
	return nil
}

type walker struct {
	b   []byte
	off int
}

func (w *walker) rest() int { return len(w.b) - w.off }

// uint reads an n-byte big-endian length.
func (w *walker) uint(n int) (int, error) {
	if w.rest() < n {
		return 0, errShort
	}
	var v uint64
	switch n {
	case 1:
		v = uint64(w.b[w.off])
	case 2:
		v = uint64(binary.BigEndian.Uint16(w.b[w.off:]))
	case 4:
		v = uint64(binary.BigEndian.Uint32(w.b[w.off:]))
	}
	w.off += n
	if v > uint64(len(w.b)) {
		return 0, errShort
	}
	return int(v), nil
}

// skip consumes n raw bytes.
func (w *walker) skip(n int) error {
	if n < 0 || w.rest() < n {
		return errShort
	}
	w.off += n
	return nil
}

func (w *walker) value(depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("nested deeper than %d", maxDepth)
	}
	if w.rest() < 1 {
		return errShort
	}
	c := w.b[w.off]
	w.off++
	switch {
	case c <= 0x7f || c >= 0xe0: // fixint
		return nil
	case c <= 0x8f:
		return w.items(int(c&0x0f)*2, depth)
	case c <= 0x9f:
		return w.items(int(c&0x0f), depth)
	case c <= 0xbf:
		return w.skip(int(c & 0x1f))
	}
	switch c {
	case 0xc0, 0xc2, 0xc3: // nil, false, true
		return nil
	case 0xc4, 0xd9: // bin8, str8
		return w.sized(1, 0)
	case 0xc5, 0xda:
		return w.sized(2, 0)
	case 0xc6, 0xdb:
		return w.sized(4, 0)
	case 0xc7: // ext8: length, type, data
		return w.sized(1, 1)
	case 0xc8:
		return w.sized(2, 1)
	case 0xc9:
		return w.sized(4, 1)
	case 0xca, 0xce, 0xd2: // 4-byte numbers
		return w.skip(4)
	case 0xcb, 0xcf, 0xd3:
		return w.skip(8)
	case 0xcc, 0xd0:
		return w.skip(1)
	case 0xcd, 0xd1:
		return w.skip(2)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16
		return w.skip(1 + 1<<(c-0xd4))
	case 0xdc, 0xdd: // array16, array32
		n, err := w.uint(2 << (c - 0xdc))
		if err != nil {
			return err
		}
		return w.items(n, depth)
	case 0xde, 0xdf: // map16, map32
		n, err := w.uint(2 << (c - 0xde))
		if err != nil {
			return err
		}
		return w.items(2*n, depth)
	}
	return fmt.Errorf("invalid type byte 0x%02x", c)
}

// sized consumes a length of lenBytes, extra type bytes and the data.
func (w *walker) sized(lenBytes, extra int) error {
	n, err := w.uint(lenBytes)
	if err != nil {
		return err
	}
	return w.skip(extra + n)
}

// items consumes n values one level deeper; every value takes at least
// one byte, so a count beyond the remaining bytes is rejected up front.
func (w *walker) items(n, depth int) error {
	if n > w.rest() {
		return errShort
	}
	for range n {
		if err := w.value(depth + 1); err != nil {
			return err
		}
	}
	return nil
}
