package controller

import (
	"errors"
	"reflect"
	"testing"
)

// FuzzDecodeRequest: any body a client sends is decoded or refused as a
// bad request, never a panic; what decodes encodes and decodes to the
// same request (once empty and nil collapsed).
func FuzzDecodeRequest(f *testing.F) {
	for _, r := range []*Request{
		{Rollout: "r-1"},
		{From: "labctl-1", Submission: &Submission{Plan: Plan{ID: "r-2", Targets: map[string]string{"n1": "/nix/store/00000000000000000000000000000001-x"}},
			Waves: [][]string{{"n1"}}, Desired: map[string][]byte{"n1": {0x81, 0xa1, 0x76, 0x01}}}},
		{Upload: "u1", Part: 1, Parts: 3, Chunk: []byte("abc")},
		{Reboot: &RebootJob{}},
	} {
		b, err := EncodeRequest(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xc1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("not ErrBadRequest: %v", err)
			}
			return
		}
		roundTrip := func(r *Request) *Request {
			b, err := EncodeRequest(r)
			if err != nil {
				t.Fatalf("decoded but cannot encode: %v", err)
			}
			again, err := DecodeRequest(b)
			if err != nil {
				t.Fatalf("re-encoded request refused: %v", err)
			}
			return again
		}
		// After one round trip (empty and nil collapse: omitempty), the
		// next changes nothing.
		r2 := roundTrip(r)
		r3 := roundTrip(r2)
		if !reflect.DeepEqual(r2, r3) {
			t.Fatalf("round trip changed the request:\n%+v\n%+v", r2, r3)
		}
	})
}

// FuzzDecodeResponse: any answer labctl receives is decoded or refused,
// never a panic.
func FuzzDecodeResponse(f *testing.F) {
	b, err := EncodeResponse(&Response{Code: CodeOK, Rollout: "r-1"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeResponse(b)
		if err == nil && r.Code == "" {
			t.Fatal("a response without a code decoded")
		}
	})
}
