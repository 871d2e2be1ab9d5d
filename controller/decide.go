package controller

// situation is what the goroutine that owns a rollout knows at one step
// of it: every input of decide, gathered from the tracker, the plan, the
// clock and the fleet view before deciding.
type situation struct {
	Begun       bool   // the first wave was published
	Due         bool   // the schedule lets a wave open now (NotBefore, Window)
	WindowOpen  bool   // inside the maintenance window (or none)
	Halted      bool   // no further wave opens
	CancelledBy string // the rollout was cancelled by someone else (its retained state or a gate says so)
	Exceeded    bool   // the failures cross the plan's threshold
	Rollback    bool   // a halt switches the succeeded targets back (--on-failure rollback)
	Opened      int    // waves opened so far
	Waves       int    // waves in all
	WaveDone    bool   // the last opened wave is over (every target ended, or its deadline passed)
	Paused      bool   // someone paused it: the next wave waits for a resume
}

// step is what the rollout does next.
type step int

const (
	stepWait         step = iota // nothing: wait for the next fact
	stepPublishFirst             // publish the first wave (a scheduled rollout's time came)
	stepCancelled                // halt: cancelled elsewhere
	stepHalt                     // halt: the failure threshold was crossed
	stepOpenWave                 // open the next wave
	stepHoldPaused               // the next wave is due but the rollout is paused
	stepHoldWindow               // the next wave is due but the window is closed
	stepFinish                   // the rollout ended
)

var stepNames = [...]string{"wait", "publish-first", "cancelled", "halt", "open-wave", "hold-paused", "hold-window", "finish"}

func (s step) String() string { return stepNames[s] }

// decide is the rollout's policy, and nothing else: a pure function of
// what is known at one step. The goroutine that owns the run gathers the
// situation, performs the step, and asks again at once after any step
// that changed the run (stepWait and the holds wait for the next fact:
// a status, a tick of the clock, a request).
func decide(s situation) step {
	switch {
	case s.CancelledBy != "" && !s.Halted:
		return stepCancelled // a scheduled rollout too: it ends before its time
	case !s.Begun && s.Halted:
		return stepFinish // cancelled before its time: nothing was published
	case !s.Begun && s.Due:
		return stepPublishFirst
	case !s.Begun:
		return stepWait
	// Crossing the threshold halts what is left to open; in the last
	// wave there is nothing left, unless switched targets must go back.
	case !s.Halted && s.Exceeded && (s.Opened < s.Waves || s.Rollback):
		return stepHalt
	case !s.WaveDone:
		return stepWait
	case s.Halted || s.Opened >= s.Waves:
		return stepFinish
	case s.Paused:
		return stepHoldPaused
	case !s.WindowOpen:
		return stepHoldWindow
	}
	return stepOpenWave
}
