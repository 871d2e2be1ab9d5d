package controller

import "testing"

// The rollout's policy, without a broker and without time.
func TestDecide(t *testing.T) {
	// running: the first wave of three was published and is under way.
	running := situation{Begun: true, Due: true, WindowOpen: true, Opened: 1, Waves: 3}
	with := func(f func(*situation)) situation { s := running; f(&s); return s }
	for _, c := range []struct {
		name string
		s    situation
		want step
	}{
		{"scheduled, not yet due", situation{Waves: 3}, stepWait},
		{"scheduled, due", situation{Due: true, WindowOpen: true, Waves: 3}, stepPublishFirst},
		{"scheduled, cancelled before its time", situation{Halted: true, Waves: 3}, stepFinish},
		{"scheduled, cancelled elsewhere before its time", situation{CancelledBy: "bob", Waves: 3}, stepCancelled},
		{"wave in progress", running, stepWait},
		{"wave done: the next opens", with(func(s *situation) { s.WaveDone = true }), stepOpenWave},
		{"last wave done", with(func(s *situation) { s.WaveDone, s.Opened = true, 3 }), stepFinish},
		{"single wave done", situation{Begun: true, Due: true, WindowOpen: true, Opened: 1, Waves: 1, WaveDone: true}, stepFinish},
		{"threshold crossed with waves left", with(func(s *situation) { s.Exceeded = true }), stepHalt},
		{"threshold crossed in the last wave", with(func(s *situation) { s.Exceeded, s.Opened = true, 3 }), stepWait},
		{"threshold crossed in the last wave, rollback", with(func(s *situation) { s.Exceeded, s.Opened, s.Rollback = true, 3, true }), stepHalt},
		{"halted, wave still running", with(func(s *situation) { s.Halted, s.Exceeded = true, true }), stepWait},
		{"halted, wave over", with(func(s *situation) { s.Halted, s.WaveDone = true, true }), stepFinish},
		{"cancelled elsewhere", with(func(s *situation) { s.CancelledBy = "alice" }), stepCancelled},
		{"cancelled elsewhere, already halted", with(func(s *situation) { s.CancelledBy, s.Halted = "alice", true }), stepWait},
		{"cancel wins over the threshold", with(func(s *situation) { s.CancelledBy, s.Exceeded = "alice", true }), stepCancelled},
		{"paused: the next wave waits", with(func(s *situation) { s.WaveDone, s.Paused = true, true }), stepHoldPaused},
		{"paused: the deadline passed, still waits", with(func(s *situation) { s.WaveDone, s.Paused = true, true }), stepHoldPaused},
		{"paused in the last wave: ends", with(func(s *situation) { s.WaveDone, s.Paused, s.Opened = true, true, 3 }), stepFinish},
		{"paused, halted: ends", with(func(s *situation) { s.WaveDone, s.Paused, s.Halted = true, true, true }), stepFinish},
		{"window closed: the next wave waits", with(func(s *situation) { s.WaveDone, s.WindowOpen, s.Due = true, false, false }), stepHoldWindow},
		{"window closed mid-wave: the wave goes on", with(func(s *situation) { s.WindowOpen, s.Due = false, false }), stepWait},
		{"window closed, halted by threshold first", with(func(s *situation) { s.WindowOpen, s.Exceeded = false, true }), stepHalt},
	} {
		if got := decide(c.s); got != c.want {
			t.Errorf("%s: %s, want %s (%+v)", c.name, got, c.want, c.s)
		}
	}
}
