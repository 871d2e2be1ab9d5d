package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/proto"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// isTerminal reports whether w is a terminal wide enough for progress
// bars, as opposed to a pipe or a file (plain lines).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false
	}
	width, _, err := term.GetSize(int(f.Fd()))
	return err == nil && width >= 40 // a terminal too narrow for bars gets lines
}

// bars draws a progress bar per wave and a live count of outcomes, on a
// terminal. Node outcomes are printed above the bars as they happen.
type bars struct {
	p *mpb.Progress

	mu      sync.Mutex
	waves   map[int]*mpb.Bar // by 1-based wave
	summary *mpb.Bar         // the live tally
	nodes   map[string]controller.NodeResult
	done    map[string]bool
}

func newBars(w io.Writer, forceRefresh bool) *bars {
	opts := []mpb.ContainerOption{mpb.WithOutput(w), mpb.WithWidth(48), mpb.WithRefreshRate(150 * time.Millisecond)}
	if forceRefresh {
		opts = append(opts, mpb.WithAutoRefresh())
	}
	return &bars{p: mpb.New(opts...), waves: map[int]*mpb.Bar{}, nodes: map[string]controller.NodeResult{}, done: map[string]bool{}}
}

// counts is the live tally shown after every bar.
func (b *bars) counts() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ok, failed, back, pending int
	for _, n := range b.nodes {
		switch {
		case n.Pending:
			pending++
		case n.State.OK():
			ok++
		case n.State == proto.StateRolledBack:
			back++
		case n.State == proto.StateCancelled:
		default:
			failed++
		}
	}
	return fmt.Sprintf("%d succeeded, %d failed, %d rolled back, %d pending", ok, failed, back, pending)
}

func (b *bars) wave(e controller.WaveEvent) {
	if e.Halted {
		fmt.Fprintf(b.p, "HALTED: %s\n", e.Reason)
		b.abort()
		return
	}
	b.mu.Lock()
	if b.summary == nil {
		// One line under the bars with the live tally of the rollout.
		b.summary = b.p.New(0, mpb.NopStyle(), mpb.BarPriority(1<<20),
			mpb.PrependDecorators(decor.Any(func(decor.Statistics) string { return b.counts() })))
	}
	b.mu.Unlock()
	bar := b.p.AddBar(int64(len(e.Nodes)), mpb.BarPriority(e.Index),
		mpb.PrependDecorators(decor.Name(fmt.Sprintf("wave %d/%d ", e.Index+1, e.Total)), decor.CountersNoUnit("%d/%d nodes", decor.WCSyncWidth)),
		mpb.AppendDecorators(decor.Elapsed(decor.ET_STYLE_GO, decor.WCSyncSpace)))
	b.mu.Lock()
	b.waves[e.Index+1] = bar
	b.mu.Unlock()
}

func (b *bars) node(n controller.NodeResult) {
	b.mu.Lock()
	b.nodes[n.Node] = n
	finished := !n.Pending && !b.done[n.Node]
	if finished {
		b.done[n.Node] = true
	}
	bar := b.waves[n.Wave]
	b.mu.Unlock()
	if !finished {
		return
	}
	if n.State.OK() {
		fmt.Fprintf(b.p, "%s  %s %s\n", time.Now().Format("15:04:05"), n.Node, n.State)
	} else {
		fmt.Fprintf(b.p, "%s  %s %s: %s\n", time.Now().Format("15:04:05"), n.Node, n.State, n.Detail)
	}
	if bar != nil {
		bar.Increment()
	}
}

// abort leaves the unfinished bars where they are.
func (b *bars) abort() {
	b.mu.Lock()
	waves := make([]*mpb.Bar, 0, len(b.waves)+1)
	for _, bar := range b.waves {
		waves = append(waves, bar)
	}
	if b.summary != nil {
		waves = append(waves, b.summary)
	}
	b.mu.Unlock()
	// Not under b.mu: aborting waits for a render, whose decorators take it.
	for _, bar := range waves {
		bar.Abort(false)
	}
}

// stop ends the display; call it before printing anything else.
func (b *bars) stop() {
	b.abort()
	b.p.Wait()
}
