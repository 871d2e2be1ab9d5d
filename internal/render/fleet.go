package render

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/lab-fleet/lab/proto"
)

// The ranks of Attention, most urgent first; RankNone is a machine that
// needs nobody.
const (
	RankBroken  = iota // its last execution failed or could not roll back; problems on the node itself
	RankRolled         // it rolled itself back
	RankChecks         // a health check fails
	RankWaiting        // its execution waits for something only someone can give (a secret its new system declares)
	RankOffline        // offline while it should run another system
	RankReboot         // it needs a reboot to run what it switched to
	RankDrift          // online, idle, and not on the system it should run
	RankNone
)

// Attention says why a machine needs someone, and how urgently (its
// rank, RankNone when it needs nobody). Every view of the fleet sorts and
// marks machines by it: labctl status and watch, the dashboard.
func Attention(r StatusRow) (string, int) {
	switch {
	case r.State == proto.StateRollbackFailed:
		return "could not roll back: " + oneLine(r.Error, 120), RankBroken
	case len(r.Problems) > 0:
		return "problem on the machine: " + oneLine(r.Problems[0], 120), RankBroken
	case r.State == proto.StateFailed || r.State == proto.StateTimedOut || r.State == proto.StateRejected:
		return string(r.State) + ": " + oneLine(r.Error, 120), RankBroken
	case r.State == proto.StateRolledBack:
		return "rolled back: " + oneLine(r.Error, 120), RankRolled
	}
	if failing := FailingChecks(r.Checks); len(failing) > 0 {
		return "health check failing: " + strings.Join(failing, ", "), RankChecks
	}
	if r.State == proto.StateFetching && strings.HasPrefix(r.Error, "waiting for secret ") {
		return oneLine(r.Error, 160), RankWaiting
	}
	wrong := r.Desired != "" && r.Current != "" && r.Desired != r.Current
	switch {
	case !r.Online && wrong:
		return "offline, not on the system it should run", RankOffline
	case r.NeedsReboot:
		return "needs a reboot to run its new system", RankReboot
	case wrong && r.Online && (r.State.Terminal() || r.State == proto.StateIdle):
		return "not on the system it should run", RankDrift
	}
	return "", RankNone
}

// FailingChecks names the health checks whose last run failed, sorted.
func FailingChecks(c proto.CheckResults) []string {
	var out []string
	for name, res := range c {
		if res.At != 0 && !res.OK {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// ByAttention sorts rows most urgent first, then by name.
func ByAttention(rows []StatusRow) {
	slices.SortStableFunc(rows, func(a, b StatusRow) int {
		return cmp.Or(cmp.Compare(a.Rank, b.Rank), cmp.Compare(a.Node, b.Node))
	})
}

// FleetCounts counts a fleet's machines, for the line above every view.
type FleetCounts struct {
	Machines  int                     `json:"machines"`
	Online    int                     `json:"online"`
	Offline   int                     `json:"offline"`
	Attention int                     `json:"attention"` // machines that need someone
	ByState   map[proto.ExecState]int `json:"by_state"`
	Groups    []string                `json:"groups"` // every group any machine is in, sorted
}

// Counts counts rows.
func Counts(rows []StatusRow) FleetCounts {
	c := FleetCounts{Machines: len(rows), ByState: map[proto.ExecState]int{}, Groups: []string{}}
	groups := map[string]bool{}
	for _, r := range rows {
		if r.Online {
			c.Online++
		} else {
			c.Offline++
		}
		if r.Rank != RankNone {
			c.Attention++
		}
		c.ByState[r.State]++
		for _, g := range r.Groups {
			groups[g] = true
		}
	}
	for g := range groups {
		c.Groups = append(c.Groups, g)
	}
	sort.Strings(c.Groups)
	return c
}

// String is the counts as one line: "5 machines: 4 online, 1 offline;
// 3 idle, 2 succeeded; 1 needs attention".
func (c FleetCounts) String() string {
	states := make([]string, 0, len(c.ByState))
	for st := range c.ByState {
		states = append(states, string(st))
	}
	sort.Strings(states)
	parts := make([]string, len(states))
	for i, st := range states {
		parts[i] = fmt.Sprintf("%d %s", c.ByState[proto.ExecState(st)], st)
	}
	line := fmt.Sprintf("%s: %d online, %d offline", Count(c.Machines, "machine"), c.Online, c.Offline)
	if len(parts) > 0 {
		line += "; " + strings.Join(parts, ", ")
	}
	switch c.Attention {
	case 0:
	case 1:
		line += "; 1 needs attention"
	default:
		line += fmt.Sprintf("; %d need attention", c.Attention)
	}
	return line
}
