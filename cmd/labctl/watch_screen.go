package main

import (
	"fmt"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
)

// watchModel is labctl watch's full-screen view: a bubbletea Model that
// holds the latest frame and what the person chose (filter, scroll,
// size). Update and View are pure; tests drive them with messages.
type watchModel struct {
	frame         watchFrame
	width, height int
	offset        int    // the first machine shown, in the filtered list
	filter        string // "" all; "@g" group g; else part of a name or group
	editing       bool   // typing the filter after "/"
	onlyAttention bool
}

// maxRollouts is how many running rollouts the header lists.
const maxRollouts = 3

// Styles are plain SGR sequences; bubbletea drops the colours a
// terminal lacks.
var (
	styleTitle   = ansi.NewStyle().Bold()
	styleBad     = ansi.NewStyle().Bold().ForegroundColor(ansi.Red)
	styleHeading = ansi.NewStyle().Reverse(true)
	styleFaint   = ansi.NewStyle().Faint()
)

func newWatchModel(f watchFrame) watchModel { return watchModel{frame: f, width: 80, height: 24} }

func (m watchModel) Init() tea.Cmd { return nil }

func (m watchModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case watchFrame:
		m.frame = msg
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tea.KeyPressMsg:
		if msg.String() == "ctrl+c" {
			return m, tea.Quit
		}
		if m.editing {
			m = m.edit(msg)
			break
		}
		page := m.tableLines()
		switch msg.String() {
		case "q":
			return m, tea.Quit
		case "j", "down":
			m.offset++
		case "k", "up":
			m.offset--
		case "space", " ", "pgdown", "ctrl+d", "f":
			m.offset += page
		case "b", "pgup", "ctrl+u":
			m.offset -= page
		case "g", "home":
			m.offset = 0
		case "G", "shift+g", "end":
			m.offset = len(m.visible())
		case "a":
			m.onlyAttention, m.offset = !m.onlyAttention, 0
		case "/":
			m.editing, m.offset = true, 0
		case "esc":
			m.filter = ""
		}
	}
	m.offset = max(0, min(m.offset, m.lastOffset(m.layout())))
	return m, nil
}

// edit types the filter: it applies as it is typed.
func (m watchModel) edit(k tea.KeyPressMsg) watchModel {
	switch k.String() {
	case "enter":
		m.editing = false
	case "esc":
		m.editing, m.filter = false, ""
	case "backspace":
		if r := []rune(m.filter); len(r) > 0 {
			m.filter = string(r[:len(r)-1])
		}
	default:
		if k.Text != "" && k.Mod&(tea.ModCtrl|tea.ModAlt) == 0 {
			m.filter += strings.TrimSpace(k.Text)
		}
	}
	return m
}

// visible are the frame's machines that the filter and the attention
// toggle leave, in the frame's order (most urgent first).
func (m watchModel) visible() []render.StatusRow {
	var out []render.StatusRow
	for _, r := range m.frame.Machines {
		if m.onlyAttention && r.Rank == render.RankNone || !matches(m.filter, r) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// matches: "@g" is group g; other text a part of the name or of a group.
func matches(filter string, r render.StatusRow) bool {
	if filter == "" {
		return true
	}
	if g, ok := strings.CutPrefix(filter, "@"); ok && g != "" {
		for _, x := range r.Groups {
			if x == g {
				return true
			}
		}
		return false
	}
	if strings.Contains(r.Node, filter) {
		return true
	}
	for _, x := range r.Groups {
		if strings.Contains(x, filter) {
			return true
		}
	}
	return false
}

// header is the lines above the table: broker, counts, running rollouts.
func (m watchModel) header() []string {
	f := m.frame
	conn := "connected"
	if !f.Connected {
		conn = styleBad.Styled("disconnected, retrying")
	}
	lines := []string{styleTitle.Styled("labctl watch") + "  " + f.Broker + "  " + conn + "  " + f.At.Local().Format("15:04:05")}
	lines = append(lines, joinWithin(strings.Split(f.Counts.String(), "; "), "; ", m.width)...)
	run := f.running()
	if len(run) == 0 {
		lines = append(lines, styleFaint.Styled("no rollout running"))
	}
	for i, v := range run {
		if i == maxRollouts {
			lines = append(lines, fmt.Sprintf("and %d more running", len(run)-i))
			break
		}
		// Its waves after the summary, or under it when both do not fit.
		lines = append(lines, joinWithin([]string{fmt.Sprintf("rollout %s %s: %s", v.ID, v.Action, v.Summary), "  waves " + waveBar(v.Waves)}, "", m.width)...)
	}
	return lines
}

// joinWithin joins parts with sep into as few lines of at most width as
// it can, breaking only between parts.
func joinWithin(parts []string, sep string, width int) []string {
	var lines []string
	for _, p := range parts {
		if n := len(lines); n > 0 && ansi.StringWidth(lines[n-1]+sep+p) <= width {
			lines[n-1] += sep + p
		} else {
			if n > 0 {
				lines[n-1] += strings.TrimSpace(sep)
			}
			lines = append(lines, p)
		}
	}
	return lines
}

// waveBar is a rollout's waves as "1✓3/3 2▶1/3 3·0/3": done, open (✗:
// a target failed), not open yet; succeeded of all.
func waveBar(ws []render.WaveView) string {
	parts := make([]string, len(ws))
	for i, w := range ws {
		mark := "·"
		switch {
		case w.Failed > 0:
			mark = "✗"
		case w.Succeeded == w.Total:
			mark = "✓"
		case w.Open:
			mark = "▶"
		}
		parts[i] = fmt.Sprintf("%d%s%d/%d", w.Index, mark, w.Succeeded, w.Total)
	}
	return strings.Join(parts, " ")
}

// footer is the line under the table: which machines are shown, and the
// keys. first and last count from 1; of is how many the filter leaves.
func (m watchModel) footer(first, last, of int) string {
	if m.editing {
		return "filter (name, part of one, or @group; enter keeps it, esc clears): " + m.filter + "█"
	}
	s := fmt.Sprintf("%d-%d of %d", first, last, of)
	if of == 0 {
		s = "none"
	}
	if all := len(m.frame.Machines); of != all {
		s += fmt.Sprintf(" (of %d)", all)
	}
	if m.filter != "" {
		s += fmt.Sprintf(" · filter %q", m.filter)
	}
	attention := "a: attention only"
	if m.onlyAttention {
		attention = "a: all machines"
	}
	return s + " · " + attention + " · /: filter · j/k: scroll · q: quit"
}

// tableLines is how many lines fit under the header: the table's
// heading and the footer take two.
func (m watchModel) tableLines() int { return max(1, m.height-len(m.header())-2) }

var watchColumns = []string{"MACHINE", "PRESENCE", "STATE", "SYSTEM", "CHECKS", "REBOOT", "SEEN", "ATTENTION"}

// minAttention is the narrowest ATTENTION column: on a narrower screen
// the reason goes on a line of its own under the machine.
const minAttention = 24

// table is the visible machines laid out for the screen's width: each
// machine's lines (one, or two when its reason needs a line of its own).
type table struct {
	heading string
	rows    [][]string // per visible machine, its lines without the mark
	marked  []bool     // needs attention
}

func (m watchModel) layout() table {
	rows := m.visible()
	cells := make([][]string, len(rows))
	widths := make([]int, len(watchColumns)-1)
	for i := range widths {
		widths[i] = len(watchColumns[i])
	}
	for i, r := range rows {
		cells[i] = m.frame.cells(r)
		for j := range widths {
			widths[j] = max(widths[j], ansi.StringWidth(cells[i][j]))
		}
	}
	widths[0] = min(widths[0], 24)
	used := 2 // the mark
	for _, w := range widths {
		used += w + 2
	}
	below := m.width-used < minAttention
	line := func(cs []string) string {
		var b strings.Builder
		for j, w := range widths {
			c := ansi.Truncate(cs[j], w, "…")
			b.WriteString(c + strings.Repeat(" ", w-ansi.StringWidth(c)+2))
		}
		if !below {
			b.WriteString(cs[len(widths)])
		}
		return strings.TrimRight(b.String(), " ")
	}
	t := table{heading: line(watchColumns), rows: make([][]string, len(rows)), marked: make([]bool, len(rows))}
	for i, r := range rows {
		t.marked[i] = r.Rank != render.RankNone
		t.rows[i] = []string{line(cells[i])}
		if below && r.Attention != "" {
			t.rows[i] = append(t.rows[i], "  ↳ "+r.Attention)
		}
	}
	return t
}

// lastOffset is the largest offset that still fills the screen.
func (m watchModel) lastOffset(t table) int {
	n, lines := len(t.rows), 0
	for n > 0 && lines+len(t.rows[n-1]) <= m.tableLines() {
		lines += len(t.rows[n-1])
		n--
	}
	return n
}

// cells are one machine's columns (watchColumns).
func (f watchFrame) cells(r render.StatusRow) []string {
	now := f.At
	presence := "offline"
	if r.Online {
		presence = "online"
	}
	if !r.Since.IsZero() {
		presence += " " + short(now.Sub(r.Since))
	}
	system := hashOf(r.Current)
	if r.Desired != "" && r.Desired != r.Current {
		system += " → " + hashOf(r.Desired)
	}
	reboot := "-"
	if r.NeedsReboot {
		reboot = "yes"
	}
	seen := "-"
	if !r.LastSeen.IsZero() {
		seen = short(now.Sub(r.LastSeen))
	}
	return []string{r.Node, presence, string(r.State), system, checkSummary(r.Checks), reboot, seen, dashed(r.Attention)}
}

// View is the screen, in the terminal's alternate screen.
func (m watchModel) View() tea.View {
	v := tea.NewView(m.text())
	v.AltScreen = true
	return v
}

// text is the screen's content: exactly height lines, none wider than
// width.
func (m watchModel) text() string {
	lines := m.header()
	t := m.layout()
	lines = append(lines, styleHeading.Styled(ansi.Truncate("  "+t.heading, m.width, "…")))
	room, end := m.tableLines(), m.offset
	for ; end < len(t.rows) && len(t.rows[end]) <= room; end++ {
		room -= len(t.rows[end])
		for j, l := range t.rows[end] {
			l = ansi.Truncate(l, m.width-2, "…")
			switch {
			case j > 0:
				lines = append(lines, "  "+styleBad.Styled(l))
			case t.marked[end]:
				lines = append(lines, styleBad.Styled("! ")+l)
			default:
				lines = append(lines, "  "+l)
			}
		}
	}
	if len(t.rows) == 0 {
		lines = append(lines, styleFaint.Styled("  no machine to show"))
	}
	for i := range lines {
		lines[i] = ansi.Truncate(lines[i], m.width, "…")
	}
	for len(lines) < m.height-1 {
		lines = append(lines, "")
	}
	return strings.Join(append(lines, ansi.Truncate(m.footer(m.offset+1, end, len(t.rows)), m.width, "…")), "\n")
}

// checkSummary is a machine's health checks in a few characters: "-"
// none, "ok", "FAIL db,web" (render.FailingChecks), "ok, 2 not run".
func checkSummary(c proto.CheckResults) string {
	if len(c) == 0 {
		return "-"
	}
	if failing := render.FailingChecks(c); len(failing) > 0 {
		return "FAIL " + strings.Join(failing, ",")
	}
	notRun := 0
	for _, res := range c {
		if res.At == 0 {
			notRun++
		}
	}
	if notRun > 0 {
		return fmt.Sprintf("ok, %d not run", notRun)
	}
	return "ok"
}

// hashOf is a store path's hash prefix ("-" for none): the table has no
// room for names, which the machine's column says anyway.
func hashOf(p string) string {
	if p == "" {
		return "-"
	}
	s := render.ShortPath(p)
	if h, _, ok := strings.Cut(s, "…"); ok {
		return h
	}
	return s
}

// short is a duration as "45s", "12m", "5h", "3d".
func short(d time.Duration) string {
	d = max(0, d)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
