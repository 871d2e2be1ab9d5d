package controller

import (
	"context"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/clock"
)

func TestParseWindow(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 12, 2, h, m, 0, 0, time.UTC) }
	for _, c := range []struct {
		in      string
		inside  []time.Time
		outside []time.Time
		next    time.Time // from 12:00
	}{
		{"02:00-05:00", []time.Time{at(2, 0), at(4, 59)}, []time.Time{at(1, 59), at(5, 0), at(12, 0)}, at(2, 0).AddDate(0, 0, 1)},
		{"22:00-04:00", []time.Time{at(22, 0), at(23, 59), at(0, 0), at(3, 59)}, []time.Time{at(4, 0), at(21, 59), at(12, 0)}, at(22, 0)},
		{"11:00-13:00", []time.Time{at(12, 0)}, []time.Time{at(13, 0)}, at(12, 0)},
	} {
		w, err := ParseWindow(c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if w.String() != c.in {
			t.Errorf("%s: String %s", c.in, w)
		}
		for _, tm := range c.inside {
			if !w.Contains(tm) {
				t.Errorf("%s does not contain %s", c.in, tm.Format("15:04"))
			}
		}
		for _, tm := range c.outside {
			if w.Contains(tm) {
				t.Errorf("%s contains %s", c.in, tm.Format("15:04"))
			}
		}
		if got := w.Next(at(12, 0)); !got.Equal(c.next) {
			t.Errorf("%s: next from 12:00 is %s, want %s", c.in, got, c.next)
		}
	}
	for _, bad := range []string{"", "2-5", "02:00", "25:00-03:00", "02:00-02:00", "a-b"} {
		if _, err := ParseWindow(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if (Window{}).Contains(at(3, 0)) == false {
		t.Error("the zero window is not always open")
	}
}

// A scheduled rollout publishes nothing before its time; a rollout
// limited to a window opens no wave outside it, and the waves open once
// the clock enters it.
func TestScheduleAndWindow(t *testing.T) {
	r := newRig(t)
	log := &switchLog{}
	for _, n := range []string{"a", "b"} {
		startGateNode(t, r, log, n, []string{"web"}, "succeeded")
	}
	r.fleet.Settle(context.Background(), 200*time.Millisecond, 2*time.Second)
	night, _ := ParseWindow("02:00-05:00")
	noon := time.Date(2026, 12, 2, 12, 0, 0, 0, time.Local)
	clk := clock.NewFake(noon)
	plan := Plan{ID: "r-night", Targets: map[string]string{"a": tlA, "b": tlA}, Strategy: Strategy{Kind: StrategyRolling, Batch: Size{N: 1}},
		Window: night, NotBefore: noon.Add(time.Hour)}
	done := make(chan *Result, 1)
	go func() {
		res, err := r.ctl.Run(context.Background(), plan, Options{Clock: clk, Timeout: 30 * time.Second})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	time.Sleep(1500 * time.Millisecond)
	if got := log.list(); len(got) != 0 {
		t.Fatalf("acted before its time: %v", got)
	}
	if v, _ := r.fleet.Get("a"); v.DesiredGen != 0 {
		t.Fatal("a Desired was published before the rollout's time")
	}
	// Past NotBefore but outside the window: still nothing.
	clk.Set(noon.Add(2 * time.Hour))
	time.Sleep(1500 * time.Millisecond)
	if got := log.list(); len(got) != 0 {
		t.Fatalf("acted outside the window: %v", got)
	}
	// Inside the window: the rollout runs to its end.
	clk.Set(time.Date(2026, 12, 3, 2, 30, 0, 0, time.Local))
	select {
	case res := <-done:
		if res == nil || res.Outcome != OutcomeSucceeded {
			t.Fatalf("result %+v", res)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the rollout did not run inside its window")
	}
	if got := log.list(); len(got) != 2 {
		t.Errorf("acted %v, want both", got)
	}
}
