package controller

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Window is a daily maintenance window in the controller's time zone:
// From and To are minutes after midnight; a window whose To is not after
// From runs over midnight (22:00-04:00). The zero Window is always open.
type Window struct {
	Set      bool `json:"set,omitempty"`
	From, To int  // minutes after midnight
}

// ParseWindow parses "HH:MM-HH:MM" (e.g. 02:00-05:00; 22:00-04:00 runs
// over midnight).
func ParseWindow(s string) (Window, error) {
	from, to, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return Window{}, fmt.Errorf("%q: want HH:MM-HH:MM, like 02:00-05:00", s)
	}
	f, err1 := time.Parse("15:04", strings.TrimSpace(from))
	t, err2 := time.Parse("15:04", strings.TrimSpace(to))
	if err1 != nil || err2 != nil {
		return Window{}, fmt.Errorf("%q: want HH:MM-HH:MM, like 02:00-05:00", s)
	}
	w := Window{Set: true, From: f.Hour()*60 + f.Minute(), To: t.Hour()*60 + t.Minute()}
	if w.From == w.To {
		return Window{}, fmt.Errorf("%q: the window is empty (from = to)", s)
	}
	return w, nil
}

func (w Window) String() string {
	if !w.Set {
		return "always"
	}
	return fmt.Sprintf("%02d:%02d-%02d:%02d", w.From/60, w.From%60, w.To/60, w.To%60)
}

// Contains reports whether t (in its own location) is inside the window.
func (w Window) Contains(t time.Time) bool {
	if !w.Set {
		return true
	}
	m := t.Hour()*60 + t.Minute()
	if w.From < w.To {
		return m >= w.From && m < w.To
	}
	return m >= w.From || m < w.To
}

// Next returns the first moment at or after t inside the window.
func (w Window) Next(t time.Time) time.Time {
	if w.Contains(t) {
		return t
	}
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
	start := day.Add(time.Duration(w.From) * time.Minute)
	if !start.After(t) {
		start = start.AddDate(0, 0, 1)
	}
	return start
}

// due reports whether the plan's schedule lets a wave open at now: not
// before NotBefore, and inside its window.
func (p *Plan) due(now time.Time) bool {
	return !now.Before(p.NotBefore) && p.Window.Contains(now)
}

// schedule says when the plan may open a wave, in words.
func (p *Plan) schedule() string {
	var parts []string
	if !p.NotBefore.IsZero() {
		parts = append(parts, "not before "+p.NotBefore.Local().Format("2006-01-02 15:04 MST"))
	}
	if p.Window.Set {
		parts = append(parts, "inside the window "+p.Window.String())
	}
	return strings.Join(parts, ", ")
}

// ZoneName names the local time zone as people know it (TZ, else the
// zoneinfo link of /etc/localtime, else the abbreviation).
func ZoneName() string {
	if tz := os.Getenv("TZ"); tz != "" {
		return strings.TrimPrefix(tz, ":")
	}
	if target, err := os.Readlink("/etc/localtime"); err == nil {
		if _, after, ok := strings.Cut(target, "zoneinfo/"); ok {
			return after
		}
		return filepath.Base(target)
	}
	name, _ := time.Now().Zone()
	return name
}
