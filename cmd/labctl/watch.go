package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
	"github.com/spf13/cobra"
)

// watchRedraw is the shortest time between two frames: a rollout's flood
// of status messages is drawn at most ten times a second.
const watchRedraw = 100 * time.Millisecond

func newWatchCmd(g *globals) *cobra.Command {
	var on string
	var plain, asJSON bool
	cmd := &cobra.Command{
		Use:   "watch [--on @group|node,...] [--plain|--json]",
		Short: "Follow the fleet and its running rollouts live",
		Long: `watch connects to the broker like status does and keeps following the
fleet until you quit.

On a terminal it is a full-screen view: the broker and whether it is
connected, the machines counted by state, every running rollout with its
waves' progress, then one line per machine, those that need attention
first (as status and the dashboard order them), redrawn as the fleet
changes. Keys: q quits, j/k or the arrows scroll (space/b a page, g/G the
ends), a shows only the machines that need attention, / filters by name
or group (@web: that group only; enter keeps the filter, esc clears it).

When stdout is not a terminal, or with --plain, it prints plain lines
instead: every machine and running rollout once, then one line per change,
such as

  2026-12-06T21:50:09Z web1 online state=activating rollout=r-1 wave=1/2 current=1b2c3d4…-nixos-system-web1 desired=9f8e7d6…-nixos-system-web1 checks=ok
  2026-12-06T21:50:09Z rollout r-1: running, wave 1 of 2: 0/2 succeeded, 1 running, 1 pending

--json prints the same changes as one JSON object per line. SIGINT and SIGTERM end
it with exit code 0; a lost broker is retried until it answers again.`,
		Example: `  labctl watch
  labctl watch --on @web
  labctl watch --plain | grep --line-buffered attention=
  labctl watch --json | jq -c 'select(.type == "machine") | [.machine.node, .machine.state]'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var sel []onTerm
			if on != "" {
				var err error
				if sel, err = parseOn(on); err != nil {
					return usageError{err}
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			screen := !plain && !asJSON && isTerminal(g.out)
			if screen {
				// Log lines would be drawn over the screen: they are
				// kept, and printed once it is closed.
				var held heldLog
				defer held.flush(g.errOut)
				var level slog.Level
				_ = level.UnmarshalText([]byte(g.v.GetString("log_level"))) // init checked it
				g.logger = slog.New(slog.NewTextHandler(&held, &slog.HandlerOptions{Level: level}))
			}
			conn, err := connectTo(ctx, g, func(t proto.Topics) []string {
				return []string{t.AllStatus(), t.AllPresence(), t.AllRollouts()}
			})
			if err != nil {
				return err
			}
			defer conn.close()
			// The systems machines should run: a viewer may not read them,
			// and watch shows the rest without.
			if err := conn.bus.Subscribe(ctx, conn.topics.AllDesired()); err != nil {
				_ = conn.bus.Unsubscribe(ctx, conn.topics.AllDesired())
				g.logger.Debug("not showing desired systems", "err", err)
			}
			frame := func() watchFrame {
				return makeFrame(time.Now(), strings.Join(conn.urls, ","), conn.bus.Connected(),
					conn.fleet.Snapshot(), conn.fleet.Rollouts(), sel)
			}
			if screen {
				return watchScreen(ctx, conn.fleet, frame, tea.WithOutput(g.out))
			}
			var seen watchSeen
			return followFrames(ctx, conn.fleet, frame, func(f watchFrame) error {
				return writeChanges(g.out, seen.changes(f), asJSON)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&on, "on", "", "only these machines: @group or node names, comma-separated (e.g. @web,db1)")
	f.BoolVar(&plain, "plain", false, "print plain lines, one per change, even on a terminal")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per change (newline-delimited)")
	addClientFlags(g, cmd)
	return cmd
}

// watchFrame is what labctl watch shows at one moment, in every form.
type watchFrame struct {
	At        time.Time
	Broker    string
	Connected bool
	Machines  []render.StatusRow   // the --on selection, most urgent first (render.ByAttention)
	Counts    render.FleetCounts   // of Machines
	Rollouts  []render.RolloutView // touching the selection, running first (render.Rollouts)
}

// makeFrame builds the frame from the fleet view: render's rows, order,
// counts and rollout views, narrowed to the machines sel selects (nil:
// all) and the rollouts with a target among them.
func makeFrame(at time.Time, broker string, connected bool, views []controller.NodeView, states []proto.RolloutState, sel []onTerm) watchFrame {
	rows := slices.DeleteFunc(render.StatusRows(views), func(r render.StatusRow) bool { return !selects(sel, r.Node, r.Groups) })
	render.ByAttention(rows)
	names := map[string]bool{}
	for _, r := range rows {
		names[r.Node] = true
	}
	rollouts := slices.DeleteFunc(render.Rollouts(states), func(v render.RolloutView) bool {
		return sel != nil && !slices.ContainsFunc(v.Targets, func(t render.TargetRow) bool { return names[t.Node] })
	})
	return watchFrame{At: at.UTC(), Broker: broker, Connected: connected, Machines: rows, Counts: render.Counts(rows), Rollouts: rollouts}
}

// selects reports whether --on's terms (nil: everything) take a machine.
// Unlike publish, a group nobody reported yet is no error: its machines
// may come.
func selects(sel []onTerm, node string, groups []string) bool {
	if sel == nil {
		return true
	}
	for _, t := range sel {
		if t.node == node || t.group != "" && slices.Contains(groups, t.group) {
			return true
		}
	}
	return false
}

// running returns the frame's running rollouts.
func (f watchFrame) running() []render.RolloutView {
	var out []render.RolloutView
	for _, v := range f.Rollouts {
		if v.Active {
			out = append(out, v)
		}
	}
	return out
}

// waveOf says which wave of its rollout a machine is in: "2/3", "" when
// the frame does not know the rollout or it has one wave.
func (f watchFrame) waveOf(r render.StatusRow) string {
	for _, v := range f.Rollouts {
		if v.ID != r.Rollout || len(v.Waves) < 2 {
			continue
		}
		for _, t := range v.Targets {
			if t.Node == r.Node && t.Wave > 0 {
				return fmt.Sprintf("%d/%d", t.Wave, len(v.Waves))
			}
		}
	}
	return ""
}

// followFrames calls emit with a frame at once, after fleet changes (at
// most every watchRedraw) and every second (relative times, the
// connection), until ctx ends.
func followFrames(ctx context.Context, fleet *controller.Fleet, frame func() watchFrame, emit func(watchFrame) error) error {
	changed, stop := fleet.Watch()
	defer stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if err := emit(frame()); err != nil {
			return err
		}
		last := time.Now()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-changed:
			if wait := time.Until(last.Add(watchRedraw)); wait > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
			}
		}
	}
}

// watchScreen runs the full-screen view until q or a signal. opts are
// the program's input, output and size (tests; default the terminal).
func watchScreen(ctx context.Context, fleet *controller.Fleet, frame func() watchFrame, opts ...tea.ProgramOption) error {
	opts = append([]tea.ProgramOption{tea.WithContext(ctx), tea.WithoutSignalHandler()}, opts...) // ctx ends on SIGINT and SIGTERM
	p := tea.NewProgram(newWatchModel(frame()), opts...)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_ = followFrames(fctx, fleet, frame, func(f watchFrame) error {
			p.Send(f)
			return nil
		})
	}()
	_, err := p.Run()
	if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil || errors.Is(err, tea.ErrInterrupted) {
		return nil // a signal: the ordinary end
	}
	return err
}

// heldLog keeps the newest log lines while the screen is open.
type heldLog struct {
	mu  sync.Mutex
	buf []byte
}

const maxHeldLog = 64 << 10

func (h *heldLog) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf = append(h.buf, p...)
	if over := len(h.buf) - maxHeldLog; over > 0 {
		h.buf = h.buf[over:]
	}
	return len(p), nil
}

func (h *heldLog) flush(w io.Writer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, _ = w.Write(h.buf)
}

// watchChange is one line of watch's plain and JSON output.
type watchChange struct {
	Time      time.Time           `json:"time"`
	Type      string              `json:"type"` // broker, machine, rollout, gone (a machine's retained state was removed)
	Broker    string              `json:"broker,omitempty"`
	Connected *bool               `json:"connected,omitempty"`
	Counts    *render.FleetCounts `json:"counts,omitempty"`
	Node      string              `json:"node,omitempty"`
	Machine   *render.StatusRow   `json:"machine,omitempty"`
	Wave      string              `json:"wave,omitempty"` // "2/3": the machine's wave in its rollout
	Rollout   *render.RolloutView `json:"rollout,omitempty"`
	text      string              // the plain line without its time
}

// watchSeen is what plain output printed last: a frame's changes are
// what differs from it.
type watchSeen struct {
	started   bool
	connected bool
	nodes     map[string]string // node → its line
	rollouts  map[string]string // rollout → its line
}

// changes returns what changed since the last frame. The first frame
// gives the broker with the counts, every machine and every running
// rollout.
func (s *watchSeen) changes(f watchFrame) []watchChange {
	var out []watchChange
	add := func(c watchChange) {
		c.Time = f.At
		out = append(out, c)
	}
	if !s.started || s.connected != f.Connected {
		c := watchChange{Type: "broker", Broker: f.Broker, Connected: &f.Connected, text: "broker " + f.Broker + " "}
		if f.Connected {
			c.text += "connected"
		} else {
			c.text += "disconnected, retrying"
		}
		if !s.started {
			c.Counts = &f.Counts
			c.text += ": " + f.Counts.String()
		}
		add(c)
	}
	if !s.started {
		s.nodes, s.rollouts = map[string]string{}, map[string]string{}
	}
	present := map[string]bool{}
	for i := range f.Machines {
		r := &f.Machines[i]
		present[r.Node] = true
		wave := f.waveOf(*r)
		if text := machineLine(*r, wave); s.nodes[r.Node] != text {
			s.nodes[r.Node] = text
			add(watchChange{Type: "machine", Node: r.Node, Machine: r, Wave: wave, text: text})
		}
	}
	for _, n := range sortedKeys(s.nodes) {
		if !present[n] {
			delete(s.nodes, n)
			add(watchChange{Type: "gone", Node: n, text: n + " gone (its retained state was removed)"})
		}
	}
	for i := range f.Rollouts {
		v := &f.Rollouts[i]
		text := "rollout " + v.ID + ": " + v.Summary
		if old, had := s.rollouts[v.ID]; old != text && (had || s.started || v.Active) {
			add(watchChange{Type: "rollout", Rollout: v, text: text})
		}
		s.rollouts[v.ID] = text
	}
	s.started, s.connected = true, f.Connected
	return out
}

// machineLine is a machine as one plain line, without the time:
// "web1 online state=running rollout=r-1 wave=2/3 current=… checks=ok".
func machineLine(r render.StatusRow, wave string) string {
	var b strings.Builder
	b.WriteString(r.Node)
	if r.Online {
		b.WriteString(" online")
	} else {
		b.WriteString(" offline")
	}
	fmt.Fprintf(&b, " state=%s", r.State)
	if r.Rollout != "" {
		fmt.Fprintf(&b, " rollout=%s", r.Rollout)
	}
	if wave != "" {
		fmt.Fprintf(&b, " wave=%s", wave)
	}
	fmt.Fprintf(&b, " current=%s", dashed(render.ShortPath(r.Current)))
	if r.Desired != "" && r.Desired != r.Current {
		fmt.Fprintf(&b, " desired=%s", render.ShortPath(r.Desired))
	}
	if failing := render.FailingChecks(r.Checks); len(failing) > 0 {
		fmt.Fprintf(&b, " failing=%s", strings.Join(failing, ","))
	} else if len(r.Checks) > 0 {
		b.WriteString(" checks=ok") // none failing (some may not have run yet)
	}
	if r.NeedsReboot {
		b.WriteString(" reboot=needed")
	}
	if r.Attention != "" {
		fmt.Fprintf(&b, " attention=%q", r.Attention)
	}
	return b.String()
}

// writeChanges prints changes as plain lines or JSON lines.
func writeChanges(w io.Writer, cs []watchChange, asJSON bool) error {
	for _, c := range cs {
		var err error
		if asJSON {
			var b []byte
			if b, err = json.Marshal(c); err == nil {
				_, err = fmt.Fprintf(w, "%s\n", b)
			}
		} else {
			_, err = fmt.Fprintf(w, "%s %s\n", c.Time.Format(time.RFC3339), c.text)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
