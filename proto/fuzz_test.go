package proto

import (
	"errors"
	"testing"
)

// Every decoder is fuzzed, seeded with the fixture table. The property: a
// decoder never panics, and what it accepts is valid, re-encodes, and decodes
// again to the same bytes (no message has two meanings).

func fuzzDecoder(f *testing.F, fixture string, mk func() Message) {
	f.Add(readFixture(f, fixture))
	for _, fx := range fixtures() {
		f.Add(readFixture(f, fx.name))
	}
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		m := mk()
		err := Decode(b, m)
		if err != nil {
			if !IsInvalid(err) {
				t.Fatalf("error is not a documented sentinel: %v", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted an invalid message: %v", err)
		}
		enc, err := Encode(m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		m2 := mk()
		if err := Decode(enc, m2); err != nil && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("canonical form does not decode: %v", err)
		}
	})
}

func FuzzDecodeDesired(f *testing.F) {
	fuzzDecoder(f, "desired", func() Message { return new(Desired) })
}
func FuzzDecodeGate(f *testing.F) { fuzzDecoder(f, "gate", func() Message { return new(Gate) }) }
func FuzzDecodeCommand(f *testing.F) {
	fuzzDecoder(f, "command", func() Message { return new(Command) })
}
func FuzzDecodeStatus(f *testing.F) {
	fuzzDecoder(f, "status", func() Message { return new(NodeStatus) })
}
func FuzzDecodePresence(f *testing.F) {
	fuzzDecoder(f, "presence", func() Message { return new(Presence) })
}
func FuzzDecodeEvent(f *testing.F) { fuzzDecoder(f, "event", func() Message { return new(Event) }) }
func FuzzDecodeRollout(f *testing.F) {
	fuzzDecoder(f, "rollout", func() Message { return new(RolloutState) })
}

func FuzzDecodeSecret(f *testing.F) {
	fuzzDecoder(f, "secret", func() Message { return new(Secret) })
}

func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{"lab/v1/node/n1/secret/db-password", "lab/v1/node/n1/status", "lab/v1/group/g/gate", "lab/v1/all/cmd", "lab/v1/rollout/r", "lab/v1/ctl/req/submit", "lab/v1/ctl/res/labctl-1/0a1b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := DefaultTopics.Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidTopic) {
				t.Fatalf("not ErrInvalidTopic: %v", err)
			}
			return
		}
		for _, id := range []string{r.Node, r.Group, r.ID} {
			if id != "" && ValidID(id) != nil {
				t.Fatalf("accepted invalid id %q in %q", id, s)
			}
		}
	})
}

func FuzzValidStorePath(f *testing.F) {
	f.Add(tl1)
	f.Add("/nix/store/x")
	f.Fuzz(func(t *testing.T, s string) {
		if ValidStorePath(s) == nil {
			for _, c := range s {
				if c == '/' || c == ' ' || c == ';' || c == 0 {
					if c == '/' && len(s) > 11 && s[:11] == StoreDir {
						continue
					}
					t.Fatalf("accepted %q", s)
				}
			}
		}
	})
}
