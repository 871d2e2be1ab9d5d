package proto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestFixtures(t *testing.T) {
	for _, f := range fixtures() {
		t.Run(f.name, func(t *testing.T) {
			b, err := Seal(f.msg)
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				must(os.MkdirAll("testdata/fixtures", 0o755))
				must(os.WriteFile(fixturePath(f.name), []byte(hex.EncodeToString(b)+"\n"), 0o644))
			}
			want := readFixture(t, f.name)
			if !bytes.Equal(b, want) {
				t.Fatalf("encoding changed (wire change!)\n got %x\nwant %x", b, want)
			}
			got := newOf(f.msg)
			if err := Decode(want, got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, f.msg) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, f.msg)
			}
			// Canonical: re-encoding the decoded message gives the same bytes.
			again, err := Encode(got)
			if err != nil || !bytes.Equal(again, want) {
				t.Fatalf("re-encode differs: %v", err)
			}
		})
	}
}

func TestSignedFixturesVerify(t *testing.T) {
	kr := Keyring{fixtureKey.ID: fixtureKey.Public().Key}
	other, _ := GenerateKey("op-2026")
	for _, f := range fixtures() {
		s, ok := f.msg.(Signable)
		if !ok {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			m := newOf(f.msg).(Signable)
			if err := Decode(readFixture(t, f.name), m); err != nil {
				t.Fatal(err)
			}
			if err := kr.Verify(m); err != nil {
				t.Fatalf("verify: %v", err)
			}
			if err := (Keyring{other.ID: other.Public().Key}).Verify(m); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("same id, other key: %v", err)
			}
			if err := (Keyring{}).Verify(m); !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("empty keyring: %v", err)
			}
			// Flip every byte of the encoding in turn: the result either fails to
			// decode or fails to verify. Nothing forged gets through.
			b := readFixture(t, f.name)
			for i := range b {
				mut := bytes.Clone(b)
				mut[i] ^= 0x01
				m2 := newOf(f.msg).(Signable)
				if Decode(mut, m2) != nil {
					continue
				}
				if err := kr.Verify(m2); err == nil && !reflect.DeepEqual(m2, s) {
					t.Fatalf("byte %d flipped: forged message verified: %+v", i, m2)
				}
			}
			_, sig := m.sigFields()
			*sig = nil
			if err := kr.Verify(m); !errors.Is(err, ErrUnsigned) {
				t.Fatalf("unsigned: %v", err)
			}
		})
	}
}

// rawMap re-encodes a fixture as a generic map, edited by fn.
func rawMap(t *testing.T, name string, fn func(map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := msgpack.Unmarshal(readFixture(t, name), &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	b, err := msgpack.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeRejects(t *testing.T) {
	cases := []struct {
		name string
		b    []byte
		want error
		in   string
	}{
		{"empty", nil, ErrMalformed, ""},
		{"not msgpack", []byte("{\"v\":1}"), ErrMalformed, ""},
		{"array", []byte{0x92, 0x01, 0x02}, ErrMalformed, ""},
		{"oversize", make([]byte, 16<<10+1), ErrTooLarge, ""},
		{"version 2", rawMap(t, "desired", func(m map[string]any) { m["v"] = 2 }), ErrUnknownVersion, "v=2"},
		{"no version", rawMap(t, "desired", func(m map[string]any) { delete(m, "v") }), ErrUnknownVersion, ""},
		{"gate as desired", readFixture(t, "gate"), ErrWrongKind, "gate"},
		{"unknown field", rawMap(t, "desired", func(m map[string]any) { m["run"] = "rm -rf /" }), ErrMalformed, "run"},
		{"bad store path", rawMap(t, "desired", func(m map[string]any) { m["toplevel"] = "/nix/store/../../etc/passwd" }), ErrInvalidField, "toplevel"},
		{"store path with shell", rawMap(t, "desired", func(m map[string]any) { m["toplevel"] = tl1 + ";reboot" }), ErrInvalidField, "toplevel"},
		{"bad node", rawMap(t, "desired", func(m map[string]any) { m["node"] = "N1/#" }), ErrInvalidField, "node"},
		{"zero gen", rawMap(t, "desired", func(m map[string]any) { m["gen"] = 0 }), ErrInvalidField, "gen"},
		{"bad action", rawMap(t, "desired", func(m map[string]any) { m["action"] = "dry-activate" }), ErrInvalidField, "action"},
		{"wrong type", rawMap(t, "desired", func(m map[string]any) { m["gen"] = "seven" }), ErrMalformed, ""},
		{"trailing bytes", append(readFixture(t, "desired"), 0xc0), ErrMalformed, "trailing"},
		{"bad check name", rawMap(t, "desired", func(m map[string]any) { m["checks"] = []string{"Web Check"} }), ErrInvalidField, "checks[0]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Decode(c.b, new(Desired))
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.in) {
				t.Fatalf("error %q does not mention %q", err, c.in)
			}
			if !IsInvalid(err) {
				t.Fatalf("IsInvalid(%v) = false", err)
			}
		})
	}
}

func TestCommandMustExpire(t *testing.T) {
	b := rawMap(t, "command", func(m map[string]any) { m["expires"] = 0 })
	if err := Decode(b, new(Command)); !errors.Is(err, ErrInvalidField) || !strings.Contains(err.Error(), "expires") {
		t.Fatalf("got %v", err)
	}
}

func TestSealRefusesInvalid(t *testing.T) {
	d := &Desired{Envelope: env("x"), Node: "n1", Rollout: "r", Gen: 1, Toplevel: "/tmp/x", Action: ActionSwitch}
	if _, err := Seal(d); !errors.Is(err, ErrInvalidField) {
		t.Fatalf("got %v", err)
	}
}

func TestStatesClassify(t *testing.T) {
	for s := range execStates {
		if s.OK() && !s.Terminal() {
			t.Errorf("%s ok but not terminal", s)
		}
	}
	if ExecState("bogus").Valid() || StateActivating.Terminal() || !StateRolledBack.Terminal() || StateRolledBack.OK() {
		t.Fatal("classification broken")
	}
}

// A command acknowledgement names the command, its op and the outcome:
// all three or none, each valid.
func TestEventAckFields(t *testing.T) {
	if err := Decode(readFixture(t, "event-ack"), new(Event)); err != nil {
		t.Fatalf("ack fixture: %v", err)
	}
	for _, c := range []struct {
		name string
		fn   func(map[string]any)
		in   string
	}{
		{"outcome without cmd", func(m map[string]any) { delete(m, "cmd") }, "cmd"},
		{"cmd without outcome", func(m map[string]any) { delete(m, "outcome") }, "outcome"},
		{"cmd without op", func(m map[string]any) { delete(m, "op") }, "op"},
		{"unknown outcome", func(m map[string]any) { m["outcome"] = "maybe" }, "outcome"},
		{"unknown op", func(m map[string]any) { m["op"] = "format-disk" }, "op"},
		{"long cmd id", func(m map[string]any) { m["cmd"] = strings.Repeat("c", 129) }, "cmd"},
		{"op on a plain event", func(m map[string]any) { delete(m, "cmd"); delete(m, "outcome") }, "cmd"},
	} {
		err := Decode(rawMap(t, "event-ack", c.fn), new(Event))
		if !errors.Is(err, ErrInvalidField) || !strings.Contains(err.Error(), c.in) {
			t.Errorf("%s: got %v, want ErrInvalidField naming %q", c.name, err, c.in)
		}
	}
	// A plain event encodes as before: no ack keys.
	var m map[string]any
	if err := msgpack.Unmarshal(readFixture(t, "event"), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cmd", "op", "outcome"} {
		if _, ok := m[k]; ok {
			t.Errorf("plain event carries %q", k)
		}
	}
}
