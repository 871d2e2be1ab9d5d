package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"
	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/testbroker"
	"github.com/lab-fleet/lab/proto"
)

var (
	watchNow = time.Date(2026, 12, 6, 21, 50, 0, 0, time.UTC)
	sysA     = proto.StoreDir + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-a"
	sysB     = proto.StoreDir + "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-b"
)

// watchNode is a machine as the fleet view holds it.
func watchNode(name string, online bool, state proto.ExecState, groups ...string) controller.NodeView {
	return controller.NodeView{Name: name, Online: online, Seen: true, Since: watchNow.Add(-time.Hour), LastSeen: watchNow.Add(-5 * time.Second),
		DesiredToplevel: sysA,
		Status: &proto.NodeStatus{Node: name, Groups: groups, Current: sysA, Execution: proto.Execution{State: state},
			Checks: proto.CheckResults{"web": {OK: true, At: 1}}, UpdatedAt: watchNow.Add(-5 * time.Second).UnixMilli()}}
}

// watchFleet: a healthy web machine, a failed one, an offline db
// machine on the system it should run, and a rollout in its second wave.
func watchFleet() ([]controller.NodeView, []proto.RolloutState) {
	failed := watchNode("web2", true, proto.StateFailed, "web")
	failed.Status.Execution.Rollout, failed.Status.Execution.Error = "r-1", "switch-to-configuration exited 1"
	busy := watchNode("web1", true, proto.StateActivating, "web")
	busy.Status.Execution.Rollout, busy.DesiredToplevel = "r-1", sysB
	views := []controller.NodeView{watchNode("db1", false, proto.StateIdle, "db"), busy, failed}
	rs := proto.RolloutState{Rollout: "r-1", State: proto.RolloutRunning, Action: proto.ActionSwitch, OpenWave: 2,
		CreatedAt: watchNow.Add(-time.Minute).UnixMilli(),
		Waves:     [][]string{{"web2"}, {"web1", "db1"}},
		Nodes: proto.NodeProgressMap{"web2": {Wave: 1, State: proto.StateFailed}, "web1": {Wave: 2, State: proto.StateActivating},
			"db1": {Wave: 2, State: proto.StateQueued}},
		Counters: proto.Counters{Total: 3, Failed: 1, Running: 1, Pending: 1}}
	done := proto.RolloutState{Rollout: "r-0", State: proto.RolloutSucceeded, Waves: [][]string{{"db1"}},
		Nodes: proto.NodeProgressMap{"db1": {Wave: 1, State: proto.StateSucceeded}}, Counters: proto.Counters{Total: 1, Succeeded: 1}}
	return views, []proto.RolloutState{done, rs}
}

func send(t *testing.T, m watchModel, msgs ...tea.Msg) watchModel {
	t.Helper()
	for _, msg := range msgs {
		next, _ := m.Update(msg)
		m = next.(watchModel)
	}
	return m
}

// key is a key press as the terminal sends it: "enter", "esc", "down",
// "ctrl+c", or text typed.
func key(s string) tea.KeyPressMsg {
	switch s {
	case "enter":
		return tea.KeyPressMsg{Code: tea.KeyEnter}
	case "esc":
		return tea.KeyPressMsg{Code: tea.KeyEscape}
	case "down":
		return tea.KeyPressMsg{Code: tea.KeyDown}
	case "ctrl+c":
		return tea.KeyPressMsg{Code: 'c', Mod: tea.ModCtrl}
	}
	r := []rune(s)
	return tea.KeyPressMsg{Code: r[0], Text: s}
}

// screen is the view as text, without styles, checked to fit w×h.
func screen(t *testing.T, m watchModel, w, h int) string {
	t.Helper()
	view := m.View()
	if !view.AltScreen {
		t.Error("the view is not on the alternate screen")
	}
	v := ansi.Strip(view.Content)
	lines := strings.Split(v, "\n")
	if len(lines) != h {
		t.Errorf("%d lines on a screen of %d:\n%s", len(lines), h, v)
	}
	for i, l := range lines {
		if ansi.StringWidth(l) > w {
			t.Errorf("line %d is %d wide on a screen of %d: %q", i+1, ansi.StringWidth(l), w, l)
		}
	}
	return v
}

// machineOrder is the machines in the order the table lists them.
func machineOrder(v string, names ...string) []string {
	type at struct {
		name string
		i    int
	}
	var found []at
	for _, n := range names {
		if m := regexp.MustCompile(`(?m)^[! ] ` + n + ` `).FindStringIndex(v); m != nil {
			found = append(found, at{n, m[0]})
		}
	}
	for i := range found {
		for j := i + 1; j < len(found); j++ {
			if found[j].i < found[i].i {
				found[i], found[j] = found[j], found[i]
			}
		}
	}
	out := make([]string, len(found))
	for i, f := range found {
		out[i] = f.name
	}
	return out
}

func TestWatchScreen(t *testing.T) {
	views, states := watchFleet()
	f := makeFrame(watchNow, "mqtt://broker:1883", true, views, states, nil)
	m := send(t, newWatchModel(watchFrame{}), tea.WindowSizeMsg{Width: 80, Height: 24}, f)
	v := screen(t, m, 80, 24)
	for _, want := range []string{
		"mqtt://broker:1883  connected",
		"3 machines: 2 online, 1 offline; 1 activating, 1 failed, 1 idle;", "1 needs attention", // wrapped
		"rollout r-1 switch: running, wave 2 of 2: 0/3 succeeded, 1 failed, 1 running, 1…\n", // render's summary, cut to fit…
		"\n  waves 1✗0/1 2▶0/2\n", // …and its waves, under it on 80 columns
		"aaaaaaa → bbbbbbb",       // current → desired
		"online 1h", "offline 1h", " 5s",
		"  ↳ failed: switch-to-configuration exited 1", // no room for the reason on the machine's line
		"1-3 of 3",
	} {
		if !strings.Contains(v, want) {
			t.Errorf("screen lacks %q:\n%s", want, v)
		}
	}
	if strings.Contains(v, "r-0") {
		t.Errorf("a finished rollout is shown as running:\n%s", v)
	}
	// The failed machine first, marked; then by name.
	if got := machineOrder(v, "db1", "web1", "web2"); strings.Join(got, " ") != "web2 db1 web1" {
		t.Errorf("order %v, want the failed web2 first:\n%s", got, v)
	}
	if !regexp.MustCompile(`(?m)^! web2 .*failed`).MatchString(v) {
		t.Errorf("web2 is not marked as needing attention:\n%s", v)
	}

	// a: only the machines that need attention; again: all.
	m = send(t, m, key("a"))
	v = screen(t, m, 80, 24)
	if got := machineOrder(v, "db1", "web1", "web2"); strings.Join(got, " ") != "web2" {
		t.Errorf("attention only shows %v:\n%s", got, v)
	}
	if !strings.Contains(v, "1-1 of 1 (of 3)") {
		t.Errorf("footer does not say what is shown:\n%s", v)
	}
	m = send(t, m, key("a"))

	// /: a filter by group, applied as typed, kept with enter, cleared by esc.
	m = send(t, m, key("/"), key("@"), key("d"), key("b"))
	v = screen(t, m, 80, 24)
	if got := machineOrder(v, "db1", "web1", "web2"); strings.Join(got, " ") != "db1" || !strings.Contains(v, "filter (name") {
		t.Errorf("filter @db shows %v:\n%s", got, v)
	}
	m = send(t, m, key("enter"))
	if v = screen(t, m, 80, 24); !strings.Contains(v, `filter "@db"`) {
		t.Errorf("the kept filter is not in the footer:\n%s", v)
	}
	m = send(t, m, key("q")) // not typed into the filter any more…
	if m.filter != "@db" {
		t.Errorf("filter %q after enter and q", m.filter)
	}
	m = send(t, m, key("esc"))
	if got := machineOrder(screen(t, m, 80, 24), "db1", "web1", "web2"); len(got) != 3 {
		t.Errorf("esc did not clear the filter: %v", got)
	}
	m = send(t, m, key("/"), key("web"), key("enter"))
	if got := machineOrder(screen(t, m, 80, 24), "db1", "web1", "web2"); strings.Join(got, " ") != "web2 web1" {
		t.Errorf("filter web shows %v", got)
	}

	// q quits; so does ctrl-c while typing.
	if _, cmd := m.Update(key("q")); cmd == nil || cmd() != tea.Quit() {
		t.Error("q does not quit")
	}
	typing := send(t, m, key("/"))
	if _, cmd := typing.Update(key("ctrl+c")); cmd == nil || cmd() != tea.Quit() {
		t.Error("ctrl-c does not quit while typing a filter")
	}

	// A lost broker says so; a new frame replaces the old.
	f.Connected = false
	if v = screen(t, send(t, m, f), 80, 24); !strings.Contains(v, "disconnected, retrying") {
		t.Errorf("no disconnected in the header:\n%s", v)
	}
}

// A fleet longer than the screen scrolls, and a resize shows more.
func TestWatchScreenScrollsAndResizes(t *testing.T) {
	var views []controller.NodeView
	for i := range 40 {
		views = append(views, watchNode(fmt.Sprintf("m%02d", i), true, proto.StateIdle, "web"))
	}
	views[37].Status.Checks = proto.CheckResults{"http": {OK: false, At: 1}}
	m := send(t, newWatchModel(watchFrame{}), tea.WindowSizeMsg{Width: 80, Height: 24},
		makeFrame(watchNow, "mqtt://b", true, views, nil, nil))
	v := screen(t, m, 80, 24)
	names := make([]string, len(views))
	for i := range views {
		names[i] = views[i].Name
	}
	first := machineOrder(v, names...)
	if len(first) < 10 || len(first) >= 40 || first[0] != "m37" || first[1] != "m00" {
		t.Fatalf("first screen shows %v (the failing m37 first, then by name)", first)
	}
	if !strings.Contains(v, "FAIL http") || !strings.Contains(v, fmt.Sprintf("1-%d of 40", len(first))) {
		t.Errorf("screen:\n%s", v)
	}
	m = send(t, m, key("j"), key("down"))
	if got := machineOrder(screen(t, m, 80, 24), names...); got[0] != first[2] || len(got) < len(first) {
		t.Errorf("two lines down shows %v, want from %s", got, first[2])
	}
	m = send(t, m, key("G"))
	if got := machineOrder(screen(t, m, 80, 24), names...); got[len(got)-1] != "m39" || len(got) < len(first) {
		t.Errorf("the end shows %v", got)
	}
	m = send(t, m, key("j")) // past the end stays at the end
	if got := machineOrder(screen(t, m, 80, 24), names...); got[len(got)-1] != "m39" || len(got) < len(first) {
		t.Errorf("past the end shows %v", got)
	}
	m = send(t, m, key("g"), tea.WindowSizeMsg{Width: 120, Height: 60})
	v = screen(t, m, 120, 60)
	if got := machineOrder(v, names...); len(got) != 40 {
		t.Errorf("120x60 shows %d of 40 machines", len(got))
	}
	// Wide enough: the counts on one line, the reason on the machine's.
	if !strings.Contains(v, "40 machines: 40 online, 0 offline; 40 idle; 1 needs attention\n") ||
		!regexp.MustCompile(`(?m)^! m37 .*FAIL http .*health check failing: http$`).MatchString(v) {
		t.Errorf("120x60:\n%s", v)
	}
	m = send(t, m, tea.WindowSizeMsg{Width: 50, Height: 12})
	if got := machineOrder(screen(t, m, 50, 12), names...); len(got) == 0 || len(got) > 12 {
		t.Errorf("50x12 shows %v", got)
	}
}

// The frame narrows to --on's machines and the rollouts that touch them,
// counting only those.
func TestWatchFrameSelects(t *testing.T) {
	views, states := watchFleet()
	sel, err := parseOn("@db")
	if err != nil {
		t.Fatal(err)
	}
	f := makeFrame(watchNow, "b", true, views, states, sel)
	if len(f.Machines) != 1 || f.Machines[0].Node != "db1" || f.Counts.Machines != 1 {
		t.Errorf("@db selects %+v", f.Machines)
	}
	if len(f.Rollouts) != 2 {
		t.Errorf("db1 is a target of both rollouts, got %d", len(f.Rollouts))
	}
	sel, _ = parseOn("web2")
	if f = makeFrame(watchNow, "b", true, views, states, sel); len(f.Machines) != 1 || len(f.Rollouts) != 1 || f.Rollouts[0].ID != "r-1" {
		t.Errorf("web2 selects %d machines, rollouts %+v", len(f.Machines), f.Rollouts)
	}
}

// Plain output: everything once, then only what changed.
func TestWatchChanges(t *testing.T) {
	views, states := watchFleet()
	var seen watchSeen
	var b strings.Builder
	if err := writeChanges(&b, seen.changes(makeFrame(watchNow, "mqtt://b", true, views, states, nil)), false); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"2026-12-06T21:50:00Z broker mqtt://b connected: 3 machines: 2 online",
		"2026-12-06T21:50:00Z web1 online state=activating rollout=r-1 wave=2/2 current=aaaaaaa…-nixos-system-a desired=bbbbbbb…-nixos-system-b checks=ok\n",
		`web2 online state=failed rollout=r-1 wave=1/2 current=aaaaaaa…-nixos-system-a checks=ok attention="failed: switch-to-configuration exited 1"`,
		"db1 offline state=idle",
		"rollout r-1: running, wave 2 of 2: 0/3 succeeded, 1 failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "r-0") || strings.Contains(out, "\x1b") {
		t.Errorf("a finished rollout at the start, or an escape:\n%s", out)
	}
	if n := strings.Count(out, "\n"); n != 5 {
		t.Errorf("%d lines, want 5 (broker, 3 machines, 1 rollout):\n%s", n, out)
	}

	// The same fleet later: nothing. Then web1 succeeds, db1 goes, the
	// broker is lost.
	if cs := seen.changes(makeFrame(watchNow.Add(time.Second), "mqtt://b", true, views, states, nil)); len(cs) != 0 {
		t.Errorf("changes without a change: %+v", cs)
	}
	views[1].Status.Execution.State = proto.StateSucceeded
	views = views[1:]
	b.Reset()
	if err := writeChanges(&b, seen.changes(makeFrame(watchNow.Add(2*time.Second), "mqtt://b", false, views, states, nil)), true); err != nil {
		t.Fatal(err)
	}
	var got []watchChange
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var c watchChange
		if err := json.Unmarshal([]byte(l), &c); err != nil {
			t.Fatalf("not a JSON line: %q: %v", l, err)
		}
		got = append(got, c)
	}
	if len(got) != 3 || got[0].Type != "broker" || *got[0].Connected || got[1].Type != "machine" || got[1].Node != "web1" ||
		got[1].Machine.State != proto.StateSucceeded || got[1].Wave != "2/2" || got[2].Type != "gone" || got[2].Node != "db1" {
		t.Errorf("changes:\n%s", b.String())
	}
}

// publishRetained publishes m as a node would, retained.
func publishRetained(t *testing.T, b *testbroker.Broker, topic string, m proto.Message) {
	t.Helper()
	raw, err := proto.Seal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Server.Publish(topic, raw, true, 1); err != nil {
		t.Fatal(err)
	}
}

func awaitOutput(t *testing.T, out *syncBuffer, re *regexp.Regexp) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !re.MatchString(out.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no line matching %s:\n%s", re, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWatchPlainFollowsTheBroker runs labctl watch on a real broker with
// one faked machine: its line comes, then the line of its change, and
// cancelling ends it with exit code 0.
func TestWatchPlainFollowsTheBroker(t *testing.T) {
	clearBrokerEnv(t)
	b := testbroker.Start(t)
	tp := proto.DefaultTopics
	p := &proto.Presence{Node: "web1", Online: true, Since: time.Now().UnixMilli()}
	p.Stamp("web1", time.Now())
	publishRetained(t, b, tp.NodePresence("web1"), p)
	st := &proto.NodeStatus{Node: "web1", Groups: []string{"web"}, Current: sysA, Execution: proto.Execution{State: proto.StateIdle},
		UpdatedAt: time.Now().UnixMilli()}
	st.Stamp("web1", time.Now())
	publishRetained(t, b, tp.NodeStatus("web1"), st)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"watch", "--broker", b.URL()}, &out, &errOut) }()
	stamp := `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ `
	awaitOutput(t, &out, regexp.MustCompile(`(?m)^`+stamp+`broker `+regexp.QuoteMeta(b.URL())+` connected: 1 machine: 1 online`))
	awaitOutput(t, &out, regexp.MustCompile(`(?m)^`+stamp+`web1 online state=idle current=aaaaaaa…-nixos-system-a$`))

	st.Execution = proto.Execution{State: proto.StateActivating, Rollout: "r-7", Gen: 2, Toplevel: sysB}
	st.UpdatedAt = time.Now().UnixMilli()
	st.Stamp("web1", time.Now())
	publishRetained(t, b, tp.NodeStatus("web1"), st)
	awaitOutput(t, &out, regexp.MustCompile(`(?m)^`+stamp+`web1 online state=activating rollout=r-7 current=`))

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after cancel\n%s", code, errOut.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not end after its context")
	}
	if o := out.String(); strings.Contains(o, "\x1b") || strings.Count(o, "web1 ") != 2 {
		t.Errorf("want exactly the two lines of web1, no escapes:\n%s", o)
	}
}

// A --on that names nothing valid is bad usage, before any connection.
func TestWatchRefusesABadSelector(t *testing.T) {
	clearBrokerEnv(t)
	code, _, errOut := labctl(t, "watch", "--on", "@Web!", "--broker", "mqtt://127.0.0.1:1")
	if code != 2 || !strings.Contains(errOut, "--on @Web!") {
		t.Errorf("exit %d: %s", code, errOut)
	}
}

// --json and --on: one JSON object per line, only the selected machine.
func TestWatchJSONSelects(t *testing.T) {
	clearBrokerEnv(t)
	b := testbroker.Start(t)
	tp := proto.DefaultTopics
	for _, n := range []string{"web1", "db1"} {
		st := &proto.NodeStatus{Node: n, Groups: []string{strings.TrimRight(n, "1")}, Execution: proto.Execution{State: proto.StateIdle},
			UpdatedAt: time.Now().UnixMilli()}
		st.Stamp(n, time.Now())
		publishRetained(t, b, tp.NodeStatus(n), st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"watch", "--json", "--on", "@db", "--broker", b.URL()}, &out, &errOut)
	}()
	awaitOutput(t, &out, regexp.MustCompile(`"node":"db1"`))
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d\n%s", code, errOut.String())
	}
	var machines []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var c watchChange
		if err := json.Unmarshal([]byte(l), &c); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		if c.Type == "machine" {
			machines = append(machines, c.Machine.Node)
		}
		if c.Type == "broker" && (c.Counts == nil || c.Counts.Machines != 1) {
			t.Errorf("the broker line counts %+v, want the one selected", c.Counts)
		}
	}
	if strings.Join(machines, " ") != "db1" {
		t.Errorf("machines %v, want db1 only", machines)
	}
}

// The full-screen program itself, on a pipe for a terminal: it draws the
// fleet view's machines, redraws when one arrives, and q ends it.
func TestWatchScreenProgram(t *testing.T) {
	fleet := controller.NewFleet(proto.DefaultTopics, nil)
	handle := func(topic string, m proto.Message) {
		raw, err := proto.Seal(m)
		if err != nil {
			t.Fatal(err)
		}
		fleet.Handle(topic, raw)
	}
	status := func(name string) {
		st := &proto.NodeStatus{Node: name, Current: sysA, Execution: proto.Execution{State: proto.StateIdle}, UpdatedAt: time.Now().UnixMilli()}
		st.Stamp(name, time.Now())
		handle(proto.DefaultTopics.NodeStatus(name), st)
	}
	status("web1")
	frame := func() watchFrame {
		return makeFrame(time.Now(), "mqtt://b", true, fleet.Snapshot(), fleet.Rollouts(), nil)
	}
	keys, typing := io.Pipe()
	defer typing.Close()
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- watchScreen(context.Background(), fleet, frame, tea.WithInput(keys), tea.WithOutput(&out), tea.WithWindowSize(80, 24))
	}()
	awaitOutput(t, &out, regexp.MustCompile(`web1`))
	if strings.Contains(out.String(), "web2") {
		t.Fatal("web2 drawn before it reported")
	}
	status("web2") // a line of its own, under web1's
	awaitOutput(t, &out, regexp.MustCompile(`web2`))
	if _, err := typing.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("q: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("q did not end the program")
	}
}

// A viewer may not read the desired systems: watch shows the rest.
func TestWatchAsViewer(t *testing.T) {
	clearBrokerEnv(t)
	url, dir := secureBroker(t, "grafana=viewer")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"watch", "--log-level", "debug", "--broker", url, "--username", "grafana", "--password-file", filepath.Join(dir, "grafana.password")}, &out, &errOut)
	}()
	awaitOutput(t, &out, regexp.MustCompile(`broker \S+ connected: 0 machines`))
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d\n%s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), `msg="not showing desired systems"`) || !strings.Contains(errOut.String(), "0x87") {
		t.Errorf("the broker did not refuse the desired systems, or watch did not say so:\n%s", errOut.String())
	}
}
