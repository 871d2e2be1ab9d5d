package render

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/proto"
)

// ShortPath shortens a store path for tables: hash prefix + name.
func ShortPath(p string) string {
	rest, ok := strings.CutPrefix(p, proto.StoreDir)
	if !ok || len(rest) < 34 {
		return p
	}
	return rest[:7] + "…" + rest[32:]
}

// WriteResult renders a rollout's end: a table by wave, a summary line,
// every target that did not succeed with the reason, and the rollback
// rollout when there was one.
func WriteResult(w io.Writer, r *controller.Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WAVE\tNODE\tSTATE\tTOPLEVEL\tDETAIL")
	nodes := slices.Clone(r.Nodes)
	slices.SortStableFunc(nodes, func(a, b controller.NodeResult) int { return a.Wave - b.Wave })
	for _, n := range nodes {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", n.Wave, n.Node, stateName(n), ShortPath(n.Toplevel), oneLine(n.Detail, 100))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	c := r.Counters
	waves := Count(len(r.Waves), "wave")
	fmt.Fprintf(w, "rollout %s %s: %d targets in %s, %d succeeded, %d failed, %d rolled back, %d pending, %d still running, %d not started\n",
		r.Rollout, r.Outcome, c.Total, waves, c.Succeeded, c.Failed, c.RolledBack, c.Pending, c.Running, c.Cancelled)
	if r.Halted {
		fmt.Fprintf(w, "halted: %s\n", r.Reason)
	}
	var notOK []string
	for _, n := range r.Nodes {
		if !n.State.OK() || n.Pending {
			notOK = append(notOK, fmt.Sprintf("  %s: %s — %s", n.Node, stateName(n), oneLine(orDash(n.Detail), 160)))
		}
	}
	if len(notOK) > 0 {
		fmt.Fprintf(w, "did not succeed:\n%s\n", strings.Join(notOK, "\n"))
	}
	if r.Rollback != nil {
		fmt.Fprintf(w, "\nswitching the targets that succeeded back (--on-failure rollback):\n")
		return WriteResult(w, r.Rollback)
	}
	return nil
}

func stateName(n controller.NodeResult) string {
	switch {
	case n.State == "":
		return "pending"
	case n.Pending:
		return string(n.State) + "…"
	}
	return string(n.State)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteJSON writes v as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// StatusRow is one line of `labctl status`.
type StatusRow struct {
	Node       string                `json:"node"`
	Online     bool                  `json:"online"`
	Groups     []string              `json:"groups"`
	State      proto.ExecState       `json:"state"`
	Rollout    string                `json:"rollout,omitempty"`
	Gen        uint64                `json:"gen,omitempty"`
	AppliedGen uint64                `json:"applied_gen"`
	Current    string                `json:"current"`
	Checks     proto.CheckResults    `json:"checks,omitempty"`
	Error      string                `json:"error,omitempty"`
	Problems   []string              `json:"problems,omitempty"` // what is wrong on the node itself
	Connect    *proto.ConnectTrouble `json:"connect,omitempty"`  // failed attempts before its current connection
	Updated    time.Time             `json:"updated"`
	// Since is when its presence last changed (online or offline since);
	// LastSeen the newest time stamp of anything it sent.
	Since    time.Time `json:"since,omitempty"`
	LastSeen time.Time `json:"last_seen,omitempty"`
	// Desired is the system it should run (its retained desired state;
	// "" when none is set), Booted the one it booted.
	Desired     string `json:"desired,omitempty"`
	Booted      string `json:"booted,omitempty"`
	NeedsReboot bool   `json:"needs_reboot,omitempty"`
	// Attention says why the machine needs someone (Attention), "" when
	// it does not; Rank orders by it (0 first).
	Attention string            `json:"attention,omitempty"`
	Rank      int               `json:"rank"`
	Status    *proto.NodeStatus `json:"-"`
}

// StatusRows turns the fleet view into rows, by node name.
func StatusRows(views []controller.NodeView) []StatusRow {
	rows := make([]StatusRow, 0, len(views))
	for _, v := range views {
		r := StatusRow{Node: v.Name, Online: v.Online, State: proto.StateIdle, Status: v.Status,
			Since: utc(v.Since), LastSeen: utc(v.LastSeen), Desired: v.DesiredToplevel}
		if s := v.Status; s != nil {
			r.Groups, r.State, r.Rollout, r.Gen = s.Groups, s.Execution.State, s.Execution.Rollout, s.Execution.Gen
			r.AppliedGen, r.Current, r.Checks, r.Error = s.AppliedGen, s.Current, s.Checks, s.Execution.Error
			r.Problems, r.Connect = s.Problems, s.Connect
			r.Booted, r.NeedsReboot = s.Booted, s.NeedsReboot
			r.Updated = time.UnixMilli(s.UpdatedAt).UTC()
			if r.State == "" {
				r.State = proto.StateIdle
			}
		}
		r.Attention, r.Rank = Attention(r)
		rows = append(rows, r)
	}
	return rows
}

func utc(t time.Time) time.Time {
	if t.IsZero() || t.Unix() <= 0 {
		return time.Time{}
	}
	return t.UTC()
}

// WriteStatus renders the fleet as a table.
func WriteStatus(w io.Writer, rows []StatusRow, now time.Time) error {
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "no nodes have reported yet")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tONLINE\tSTATE\tROLLOUT\tCURRENT\tCHECKS\tUPDATED")
	for _, r := range rows {
		online := "no"
		if r.Online {
			online = "yes"
		}
		updated := "-"
		if !r.Updated.IsZero() {
			updated = now.Sub(r.Updated).Round(time.Second).String() + " ago"
		}
		state := string(r.State)
		if len(r.Problems) > 0 {
			state += " (!)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Node, online, state, dash(r.Rollout), dash(ShortPath(r.Current)), checks(r.Checks), updated)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The counts and the machines that need someone, most urgent first:
	// the same words as the dashboard's and labctl watch's.
	if _, err := fmt.Fprintln(w, Counts(rows)); err != nil {
		return err
	}
	urgent := slices.Clone(rows)
	ByAttention(urgent)
	for _, r := range urgent {
		if r.Rank == RankNone {
			break
		}
		if _, err := fmt.Fprintf(w, "attention: %s: %s\n", r.Node, r.Attention); err != nil {
			return err
		}
	}
	for _, r := range rows {
		for _, p := range r.Problems {
			if _, err := fmt.Fprintf(w, "(!) %s: %s\n", r.Node, p); err != nil {
				return err
			}
		}
	}
	for _, r := range rows {
		if c := r.Connect; c != nil && r.Online {
			since, until := time.UnixMilli(c.Since).UTC(), time.UnixMilli(c.Until).UTC()
			var err error
			if c.Attempts == 1 {
				_, err = fmt.Fprintf(w, "note: %s connected after 1 failed attempt at %s: %s\n", r.Node, since.Format("2006-01-02 15:04:05 MST"), c.Error)
			} else {
				_, err = fmt.Fprintf(w, "note: %s connected after %d failed attempts from %s to %s; the last: %s\n",
					r.Node, c.Attempts, since.Format("2006-01-02 15:04:05"), until.Format("15:04:05 MST"), c.Error)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func checks(c proto.CheckResults) string {
	if len(c) == 0 {
		return "-"
	}
	names := make([]string, 0, len(c))
	for n := range c {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		mark := "ok"
		switch {
		case c[n].At == 0:
			mark = "?" // configured, not run since labd started
		case !c[n].OK:
			mark = "FAIL"
		}
		parts[i] = n + ":" + mark
	}
	return strings.Join(parts, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}

// ExitCode is labctl's exit code for a rollout's outcome: 0 succeeded,
// 3 failed, 4 rolled back, 5 pending (offline nodes converge when they
// wake), 6 cancelled. 1 and 2 are labctl's own (the command failed; bad
// usage).
func ExitCode(o controller.Outcome) int {
	switch o {
	case controller.OutcomeSucceeded:
		return 0
	case controller.OutcomeFailed:
		return 3
	case controller.OutcomeRolledBack:
		return 4
	case controller.OutcomePending:
		return 5
	case controller.OutcomeCancelled:
		return 6
	}
	return 1
}

// Count is n and the noun, plural unless n is 1: "1 wave", "3 waves".
func Count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
