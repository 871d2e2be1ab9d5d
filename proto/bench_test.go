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

func BenchmarkSignDesired(b *testing.B) {
	d := fixtures()[0].msg.(*Desired)
	b.ReportAllocs()
	for b.Loop() {
		if err := Sign(d, fixtureKey); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyDesired(b *testing.B) {
	d := fixtures()[0].msg.(*Desired)
	kr, err := NewKeyring(fixtureKey.Public().String())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := kr.Verify(d); err != nil {
			b.Fatal(err)
		}
	}
}
