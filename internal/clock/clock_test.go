package clock

import (
	"testing"
	"time"
)

func TestFakeFiresDueTimersOnly(t *testing.T) {
	c := NewFake(time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC))
	fired := make(chan string, 3)
	c.AfterFunc(time.Second, func() { fired <- "1s" })
	c.AfterFunc(time.Minute, func() { fired <- "1m" })
	stopped := c.AfterFunc(2*time.Second, func() { fired <- "stopped" })
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop: want true once, then false")
	}
	c.Advance(1500 * time.Millisecond)
	if got := <-fired; got != "1s" {
		t.Fatalf("fired %s", got)
	}
	select {
	case got := <-fired:
		t.Fatalf("%s fired early", got)
	case <-time.After(50 * time.Millisecond):
	}
	if c.Pending() != 1 {
		t.Fatalf("pending %d, want 1", c.Pending())
	}
	c.Set(c.Now().Add(-time.Hour)) // never back
	if !c.Now().Equal(time.Date(2026, 12, 2, 0, 0, 1, 500_000_000, time.UTC)) {
		t.Fatalf("now %s", c.Now())
	}
	c.Advance(time.Minute)
	if got := <-fired; got != "1m" {
		t.Fatalf("fired %s", got)
	}
}

func TestOr(t *testing.T) {
	if _, ok := Or(nil).(Real); !ok {
		t.Error("Or(nil) is not the real clock")
	}
	f := NewFake(time.Now())
	if Or(f) != Clock(f) {
		t.Error("Or(c) is not c")
	}
}
