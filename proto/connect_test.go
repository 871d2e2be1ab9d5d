package proto

import (
	"errors"
	"strings"
	"testing"
)

// A node's run of failed attempts round-trips, is absent when there was
// none, and nonsense in it is refused naming the field.
func TestStatusConnectTrouble(t *testing.T) {
	ok := &ConnectTrouble{Attempts: 3, Since: 1764000000000, Until: 1764000009000, Error: "bad username or password"}
	s := &NodeStatus{Envelope: env("s"), Node: "n1", Connect: ok}
	b, err := Seal(s)
	if err != nil {
		t.Fatal(err)
	}
	var got NodeStatus
	if err := Decode(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Connect == nil || *got.Connect != *ok {
		t.Errorf("decoded %+v, want %+v", got.Connect, ok)
	}
	none, err := Seal(&NodeStatus{Envelope: env("s"), Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(none), "connect") {
		t.Error("a status without failed attempts carries the connect key")
	}
	for _, bad := range []ConnectTrouble{
		{Attempts: 0, Since: 1, Until: 1, Error: "x"},
		{Attempts: 1, Since: 0, Until: 1, Error: "x"},
		{Attempts: 1, Since: 5, Until: 4, Error: "x"},
		{Attempts: 1, Since: 1, Until: 1, Error: strings.Repeat("x", maxText+1)},
	} {
		bad := bad
		_, err := Seal(&NodeStatus{Envelope: env("s"), Node: "n1", Connect: &bad})
		if !errors.Is(err, ErrInvalidField) || !strings.Contains(err.Error(), "connect") {
			t.Errorf("%+v: got %v, want an invalid connect field", bad, err)
		}
	}
}
