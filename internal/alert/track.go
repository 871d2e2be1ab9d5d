package alert

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
)

// Kind names an event; webhooks subscribe to kinds.
type Kind string

// The events.
const (
	RolloutFinished       Kind = "rollout-finished"        // a rollout ended: succeeded, rolled-back, failed or cancelled
	RolloutHalted         Kind = "rollout-halted"          // a rollout stopped opening waves (its failure threshold, a cancel)
	MachineRolledBack     Kind = "machine-rolled-back"     // a machine rolled itself back to its previous system
	MachineRollbackFailed Kind = "machine-rollback-failed" // a machine could not roll back: it needs someone
	MachineOffline        Kind = "machine-offline"         // offline longer than the threshold
	MachineOnline         Kind = "machine-online"          // back online after a machine-offline event
	CheckFailing          Kind = "check-failing"           // a health check fails outside a rollout
	CheckRecovered        Kind = "check-recovered"         // it passes again after a check-failing event
)

// Kinds lists every kind, in the order of the docs.
var Kinds = []Kind{RolloutFinished, RolloutHalted, MachineRolledBack, MachineRollbackFailed, MachineOffline, MachineOnline, CheckFailing, CheckRecovered}

// ParseKind checks a kind's name.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, nil
		}
	}
	names := make([]string, len(Kinds))
	for i, k := range Kinds {
		names[i] = string(k)
	}
	return "", fmt.Errorf("unknown event %q: want one of %s", s, strings.Join(names, ", "))
}

// Event is one thing that happened, as webhooks receive it (the generic
// format's body).
type Event struct {
	Kind     Kind      `json:"event"`
	At       time.Time `json:"at"`
	Severity string    `json:"severity"` // info, warning, critical
	Summary  string    `json:"summary"`  // one line for people
	Machine  string    `json:"machine,omitempty"`
	Rollout  string    `json:"rollout,omitempty"`
	State    string    `json:"state,omitempty"`  // the rollout's phase or the machine's execution state
	Check    string    `json:"check,omitempty"`  // the health check
	Detail   string    `json:"detail,omitempty"` // the error, halt reason or check output
	// Since is when the machine went offline (machine-offline, -online).
	Since time.Time `json:"since,omitzero"`
	// Counters are the rollout's targets by state (rollout events).
	Counters *proto.Counters `json:"counters,omitempty"`
}

// active is whether an execution state is part of a rollout in progress.
func active(s proto.ExecState) bool {
	switch s {
	case proto.StateQueued, proto.StateDeferred, proto.StateFetching, proto.StateActivating,
		proto.StateRebooting, proto.StateVerifying, proto.StateRollingBack:
		return true
	}
	return false
}

// machineSeen is what the tracker remembers of one machine.
type machineSeen struct {
	exec          string // rollout and state of its execution, as last seen
	online        bool
	lastOnline    time.Time // when it was last seen online
	offlineSince  time.Time // when it was seen going offline; zero while online or when it was offline at first sight
	offlineAlert  bool      // a machine-offline event was sent for this absence
	failingChecks map[string]bool
}

// tracker turns successive views of the fleet into events. It is owned by
// one goroutine.
type tracker struct {
	offlineAfter time.Duration
	// start is when it began watching: what happened before, by the
	// sender's own time stamp, is not news at first sight.
	start    time.Time
	rollouts map[string]proto.RolloutState
	machines map[string]*machineSeen
}

func newTracker(offlineAfter time.Duration, start time.Time) *tracker {
	return &tracker{offlineAfter: offlineAfter, start: start.Truncate(time.Millisecond), rollouts: map[string]proto.RolloutState{}, machines: map[string]*machineSeen{}}
}

// observe compares the fleet with what it saw before and returns the
// events, oldest concern first: rollouts, then machines by name.
func (t *tracker) observe(rows []render.StatusRow, rollouts []proto.RolloutState, now time.Time) []Event {
	var evs []Event
	seen := map[string]bool{}
	for _, rs := range rollouts {
		seen[rs.Rollout] = true
		old, had := t.rollouts[rs.Rollout]
		t.rollouts[rs.Rollout] = rs
		if !had {
			if time.UnixMilli(rs.TS).Before(t.start) {
				continue // first sight of what happened before we watched
			}
			old = proto.RolloutState{State: proto.RolloutRunning} // news: it changed since we started
		}
		k := rs.Counters
		if rs.Halted && !old.Halted && !rs.State.Terminal() {
			evs = append(evs, Event{Kind: RolloutHalted, At: now, Severity: "warning", Rollout: rs.Rollout, State: string(rs.State),
				Detail: rs.Reason, Counters: &k, Summary: fmt.Sprintf("rollout %s halted: %s", rs.Rollout, orDash(rs.Reason))})
		}
		if rs.State.Terminal() && !old.State.Terminal() {
			sev := "info"
			switch rs.State {
			case proto.RolloutFailed:
				sev = "critical"
			case proto.RolloutRolledBack, proto.RolloutCancelled:
				sev = "warning"
			}
			sum := fmt.Sprintf("rollout %s %s: %d succeeded, %d failed, %d rolled back, %d cancelled", rs.Rollout, rs.State,
				k.Succeeded, k.Failed, k.RolledBack, k.Cancelled)
			if rs.Halted && rs.Reason != "" {
				sum += " (halted: " + rs.Reason + ")"
			}
			evs = append(evs, Event{Kind: RolloutFinished, At: now, Severity: sev, Rollout: rs.Rollout, State: string(rs.State),
				Detail: rs.Reason, Counters: &k, Summary: sum})
		}
	}
	for id := range t.rollouts {
		if !seen[id] {
			delete(t.rollouts, id) // cleared: a later rollout of the same id is new
		}
	}

	names := map[string]bool{}
	for _, r := range rows {
		names[r.Node] = true
		m, had := t.machines[r.Node]
		exec := r.Rollout + "\x00" + string(r.State)
		if !had {
			m = &machineSeen{exec: exec, online: r.Online, failingChecks: map[string]bool{}}
			if r.Online {
				m.lastOnline = now
			}
			for name, c := range r.Checks {
				if c.At != 0 && !c.OK {
					m.failingChecks[name] = true // failing before we watched: not news
				}
			}
			t.machines[r.Node] = m
			if r.Status == nil || time.UnixMilli(r.Status.Execution.Since).Before(t.start) {
				continue // its execution ended before we watched
			}
			m.exec = "" // news: it changed since we started
		}
		if exec != m.exec {
			m.exec = exec
			switch r.State {
			case proto.StateRolledBack:
				evs = append(evs, Event{Kind: MachineRolledBack, At: now, Severity: "warning", Machine: r.Node, Rollout: r.Rollout,
					State: string(r.State), Detail: r.Error, Summary: fmt.Sprintf("%s rolled back to its previous system: %s", r.Node, orDash(oneLine(r.Error)))})
			case proto.StateRollbackFailed:
				evs = append(evs, Event{Kind: MachineRollbackFailed, At: now, Severity: "critical", Machine: r.Node, Rollout: r.Rollout,
					State: string(r.State), Detail: r.Error, Summary: fmt.Sprintf("%s could not roll back and needs someone: %s", r.Node, orDash(oneLine(r.Error)))})
			}
		}
		// Presence: offline longer than the threshold, and back.
		switch {
		case r.Online && !m.online:
			if m.offlineAlert {
				evs = append(evs, Event{Kind: MachineOnline, At: now, Severity: "info", Machine: r.Node, Since: m.offlineSince,
					Summary: fmt.Sprintf("%s is back online after %s", r.Node, now.Sub(m.offlineSince).Round(time.Second))})
			}
			m.online, m.offlineSince, m.offlineAlert = true, time.Time{}, false
		case !r.Online && m.online:
			m.online, m.offlineSince = false, now
			if r.Since.After(m.lastOnline) && r.Since.Before(now) {
				m.offlineSince = r.Since // the machine's own account of when it went, if it is plausible
			}
		}
		if m.online {
			m.lastOnline = now
		}
		if !m.online && !m.offlineAlert && !m.offlineSince.IsZero() && now.Sub(m.offlineSince) >= t.offlineAfter {
			m.offlineAlert = true
			evs = append(evs, Event{Kind: MachineOffline, At: now, Severity: "warning", Machine: r.Node, Since: m.offlineSince,
				Summary: fmt.Sprintf("%s has been offline for %s", r.Node, now.Sub(m.offlineSince).Round(time.Second))})
		}
		// Health checks outside a rollout (during one, the rollout's own
		// verification and events tell).
		checks := make([]string, 0, len(r.Checks))
		for name := range r.Checks {
			checks = append(checks, name)
		}
		sort.Strings(checks)
		for _, name := range checks {
			c := r.Checks[name]
			if c.At == 0 {
				continue
			}
			if !c.OK && r.Status != nil && c.At <= r.Status.Execution.Since {
				// The result of the last rollout's verification (it ran
				// before that execution ended): the rollout and its
				// rollback say it. A run after it (labd's check_interval,
				// a boot) is news.
				continue
			}
			switch {
			case !c.OK && !m.failingChecks[name] && !active(r.State):
				m.failingChecks[name] = true
				evs = append(evs, Event{Kind: CheckFailing, At: now, Severity: "warning", Machine: r.Node, Check: name, State: string(r.State),
					Detail: c.Detail, Summary: fmt.Sprintf("%s: health check %s fails: %s", r.Node, name, orDash(oneLine(c.Detail)))})
			case c.OK && m.failingChecks[name]:
				delete(m.failingChecks, name)
				evs = append(evs, Event{Kind: CheckRecovered, At: now, Severity: "info", Machine: r.Node, Check: name, State: string(r.State),
					Summary: fmt.Sprintf("%s: health check %s passes again", r.Node, name)})
			}
		}
		for name := range m.failingChecks {
			if _, ok := r.Checks[name]; !ok {
				delete(m.failingChecks, name) // the check is gone
			}
		}
	}
	for name := range t.machines {
		if !names[name] {
			delete(t.machines, name)
		}
	}
	return evs
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine is the first line of s, at most 200 bytes.
func oneLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
