package render

import (
	"fmt"
	"sort"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/proto"
)

// RolloutView is a rollout as every view shows it: its waves as progress,
// each target's state, and why it halted.
type RolloutView struct {
	ID        string             `json:"id"`
	State     proto.RolloutPhase `json:"state"`
	Action    proto.Action       `json:"action"`
	Strategy  string             `json:"strategy"`
	Created   time.Time          `json:"created"`
	Updated   time.Time          `json:"updated"`
	Active    bool               `json:"active"` // still running: waves may open, targets still move
	Halted    bool               `json:"halted,omitempty"`
	Reason    string             `json:"reason,omitempty"`
	OpenWave  int                `json:"open_wave"`
	Counters  proto.Counters     `json:"counters"`
	Omitted   int                `json:"omitted,omitempty"` // targets the retained state left out (very large rollouts)
	Waves     []WaveView         `json:"waves"`
	Targets   []TargetRow        `json:"targets"`
	Summary   string             `json:"summary"` // one line: "running, wave 2 of 3: 4/9 succeeded, 1 failed"
	Submitter string             `json:"submitter,omitempty"`
}

// WaveView is one wave's progress.
type WaveView struct {
	Index     int  `json:"index"` // from 1
	Open      bool `json:"open"`
	Total     int  `json:"total"`
	Succeeded int  `json:"succeeded"`
	Failed    int  `json:"failed"` // failed, rolled back, rejected, timed out
	Running   int  `json:"running"`
	Pending   int  `json:"pending"` // not started (or not reported)
}

// TargetRow is one target of a rollout.
type TargetRow struct {
	Node   string          `json:"node"`
	Wave   int             `json:"wave"` // from 1, its place in the rollout's waves
	State  proto.ExecState `json:"state"`
	Error  string          `json:"error,omitempty"`
	Online bool            `json:"online"`
}

// Rollout turns a rollout's retained state into its view.
func Rollout(rs proto.RolloutState) RolloutView {
	v := RolloutView{ID: rs.Rollout, State: rs.State, Action: rs.Action, Strategy: rs.Strategy,
		Created: time.UnixMilli(rs.CreatedAt).UTC(), Updated: time.UnixMilli(rs.TS).UTC(),
		Active: rs.State == proto.RolloutRunning, Halted: rs.Halted, Reason: rs.Reason,
		OpenWave: rs.OpenWave, Counters: rs.Counters, Omitted: rs.Omitted}
	for i, nodes := range rs.Waves {
		w := WaveView{Index: i + 1, Open: i < rs.OpenWave, Total: len(nodes)}
		for _, n := range nodes {
			p, ok := rs.Nodes[n]
			switch {
			case !ok:
				// left out of a very large rollout's state: succeeded first
				if rs.Omitted > 0 && i < rs.OpenWave {
					w.Succeeded++
				} else {
					w.Pending++
				}
			case p.State.OK():
				w.Succeeded++
			case p.State.Terminal() && p.State != proto.StateCancelled:
				w.Failed++
			case p.State == proto.StateCancelled, p.State == proto.StateIdle, p.State == proto.StateQueued, p.State == "":
				w.Pending++
			default:
				w.Running++
			}
		}
		v.Waves = append(v.Waves, w)
	}
	wave := map[string]int{}
	for i, nodes := range rs.Waves {
		for _, n := range nodes {
			wave[n] = i + 1
		}
	}
	for n, p := range rs.Nodes {
		v.Targets = append(v.Targets, TargetRow{Node: n, Wave: wave[n], State: p.State, Error: p.Error, Online: p.Online})
	}
	sort.Slice(v.Targets, func(i, j int) bool {
		a, b := v.Targets[i], v.Targets[j]
		if a.Wave != b.Wave {
			return a.Wave < b.Wave
		}
		return a.Node < b.Node
	})
	c := rs.Counters
	where := ""
	if len(rs.Waves) > 1 {
		where = fmt.Sprintf(", wave %d of %d", max(1, rs.OpenWave), len(rs.Waves))
	}
	v.Summary = fmt.Sprintf("%s%s: %d/%d succeeded", rs.State, where, c.Succeeded, c.Total)
	for _, x := range []struct {
		n    int
		what string
	}{{c.Failed, "failed"}, {c.RolledBack, "rolled back"}, {c.Running, "running"}, {c.Pending, "pending"}, {c.Cancelled, "cancelled"}} {
		if x.n > 0 {
			v.Summary += fmt.Sprintf(", %d %s", x.n, x.what)
		}
	}
	if rs.Halted && rs.Reason != "" {
		v.Summary += " — halted: " + rs.Reason
	}
	return v
}

// Rollouts turns every retained rollout state into its view, running
// ones first, then newest first.
func Rollouts(states []proto.RolloutState) []RolloutView {
	out := make([]RolloutView, 0, len(states))
	for _, rs := range states {
		out = append(out, Rollout(rs))
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Active != out[j].Active {
			return out[i].Active
		}
		return out[i].Created.After(out[j].Created)
	})
	return out
}

// Line is one line of a history: a node's event or a rollout's change.
type Line struct {
	At      time.Time `json:"at"`
	Node    string    `json:"node,omitempty"`
	Rollout string    `json:"rollout,omitempty"`
	Text    string    `json:"text"`
	Detail  string    `json:"detail,omitempty"`
	Trouble bool      `json:"trouble,omitempty"` // a failure, a rollback, a halt
}

// Lines turns the fleet's history into lines, oldest first.
func Lines(hs []controller.Happening) []Line {
	out := make([]Line, 0, len(hs))
	for _, h := range hs {
		l := Line{At: h.At.UTC(), Rollout: h.RolloutID()}
		switch {
		case h.Event != nil:
			e := h.Event
			l.Node, l.Detail = e.Node, e.Detail
			if e.Cmd != "" {
				l.Text = fmt.Sprintf("%s command: %s", e.Op, e.Outcome)
				l.Trouble = e.Outcome == proto.CmdRefused || e.Outcome == proto.CmdFailed
			} else {
				l.Text = fmt.Sprintf("%s → %s", orDash(string(e.Prev)), e.State)
				l.Trouble = e.State.Terminal() && !e.State.OK() && e.State != proto.StateCancelled
			}
		case h.Rollout != nil:
			r := h.Rollout
			l.Text = string(r.State)
			if r.Waves > 1 && r.OpenWave > 0 {
				l.Text = fmt.Sprintf("%s, wave %d of %d open", r.State, r.OpenWave, r.Waves)
			}
			l.Text += fmt.Sprintf(" (%d/%d succeeded)", r.Counters.Succeeded, r.Counters.Total)
			if r.Halted {
				l.Text += ", halted"
				l.Trouble = true
			}
			l.Detail = r.Reason
			l.Trouble = l.Trouble || r.State == proto.RolloutFailed || r.State == proto.RolloutRolledBack
		}
		out = append(out, l)
	}
	return out
}
