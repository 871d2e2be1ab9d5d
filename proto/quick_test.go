package proto

import (
	"errors"
	"testing"
	"time"
)

func TestSealDecodeSignRoundTrip(t *testing.T) {
	k, err := GenerateKey("op-1")
	if err != nil {
		t.Fatal(err)
	}
	d := &Desired{Node: "n1", Rollout: "r1", Gen: 7, Toplevel: "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-n1-2", Action: ActionSwitch}
	d.Stamp("ctl", time.Unix(1700000000, 0))
	if err := Sign(d, k); err != nil {
		t.Fatal(err)
	}
	b, err := Seal(d)
	if err != nil {
		t.Fatal(err)
	}
	var got Desired
	if err := Decode(b, &got); err != nil {
		t.Fatal(err)
	}
	kr := Keyring{k.ID: k.Public().Key}
	if err := kr.Verify(&got); err != nil {
		t.Fatal(err)
	}
	got.Gen++
	if err := kr.Verify(&got); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered: %v", err)
	}
}
