package proto

import "testing"

// Benchmarks of the wire hot paths, one sub-benchmark per kind, over the
// canonical fixtures. benchstat-ready:
//
//	go test ./proto -run '^$' -bench . -benchmem -count 6 | tee new.txt
func BenchmarkSeal(b *testing.B) {
	for _, f := range fixtures() {
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Seal(f.msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, f := range fixtures() {
		raw, err := Seal(f.msg)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if err := Decode(raw, newOf(f.msg)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// signables are the fixtures that carry a signature: Desired, Gate, Command, Secret.
func signables(b *testing.B) []struct {
	name string
	msg  Message
} {
	var out []struct {
		name string
		msg  Message
	}
	for _, f := range fixtures() {
		if _, ok := f.msg.(Signable); ok {
			out = append(out, f)
		}
	}
	if len(out) != 4 {
		b.Fatalf("%d signable fixtures, want desired, gate, command and secret", len(out))
	}
	return out
}

func BenchmarkSign(b *testing.B) {
	for _, f := range signables(b) {
		m := f.msg.(Signable)
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := Sign(m, fixtureKey); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	kr, err := NewKeyring(fixtureKey.Public().String())
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range signables(b) {
		m := f.msg.(Signable)
		if err := Sign(m, fixtureKey); err != nil {
			b.Fatal(err)
		}
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := kr.Verify(m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
