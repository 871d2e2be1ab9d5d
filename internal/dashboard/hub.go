package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/render"
)

// UpdateInterval is the default shortest time between two live updates: a
// rollout of thousands of machines changes the view thousands of times a
// second, and a page needs only the latest.
const UpdateInterval = 500 * time.Millisecond

// clientQueue is how many updates wait for one page before it is
// disconnected as too slow.
const clientQueue = 16

// Update is one live update: the machines whose rows changed, those that
// are gone, and the counts and rollouts (few, sent whole).
type Update struct {
	Machines []render.StatusRow   `json:"machines"`
	Gone     []string             `json:"gone,omitempty"`
	Counts   render.FleetCounts   `json:"counts"`
	Rollouts []render.RolloutView `json:"rollouts"`
	Now      time.Time            `json:"now"`
}

// hub turns fleet changes into updates for every connected page. run is
// the only goroutine that computes them; serve's goroutines only copy
// from their queues.
type hub struct {
	fleet *controller.Fleet
	log   *slog.Logger
	every time.Duration

	mu      sync.Mutex
	clients map[chan []byte]struct{}
	rows    map[string][]byte // the rows last sent, as JSON, by machine
	snap    []byte            // the snapshot event matching rows
}

func newHub(f *controller.Fleet, log *slog.Logger, every time.Duration) *hub {
	return &hub{fleet: f, log: log, every: every, clients: map[chan []byte]struct{}{}, rows: map[string][]byte{}}
}

func (h *hub) run(ctx context.Context) {
	changed, stop := h.fleet.Watch()
	defer stop()
	h.tick()
	for {
		select {
		case <-ctx.Done():
			h.mu.Lock()
			for ch := range h.clients {
				close(ch)
				delete(h.clients, ch)
			}
			h.mu.Unlock()
			return
		case <-changed:
		}
		h.tick()
		select { // at most one update an interval
		case <-ctx.Done():
		case <-time.After(h.every):
		}
	}
}

// tick computes the view, sends what changed since the last tick, and
// keeps the snapshot for pages that connect later.
func (h *hub) tick() {
	h.mu.Lock()
	idle := len(h.clients) == 0
	if idle { // nobody watches: a large fleet costs nothing; the next page gets a snapshot
		h.rows, h.snap = map[string][]byte{}, nil
	}
	h.mu.Unlock()
	if idle {
		return
	}
	d := fleetData(h.fleet)
	up := Update{Counts: d.Counts, Rollouts: d.Rollouts, Now: d.Now}
	rows := make(map[string][]byte, len(d.Machines))
	h.mu.Lock()
	old := h.rows
	h.mu.Unlock()
	for _, r := range d.Machines {
		b, _ := json.Marshal(r)
		rows[r.Node] = b
		if !bytes.Equal(old[r.Node], b) {
			up.Machines = append(up.Machines, r)
		}
	}
	for name := range old {
		if _, ok := rows[name]; !ok {
			up.Gone = append(up.Gone, name)
		}
	}
	snap, err := event("snapshot", d)
	if err != nil {
		h.log.Error("dashboard: snapshot not encoded", "err", err)
		return
	}
	msg, err := event("update", up)
	if err != nil {
		h.log.Error("dashboard: update not encoded", "err", err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rows, h.snap = rows, snap
	for ch := range h.clients {
		select {
		case ch <- msg:
		default: // too slow: it reconnects and gets a snapshot
			close(ch)
			delete(h.clients, ch)
		}
	}
}

func event(name string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "event: %s\ndata: %s\n\n", name, b), nil
}

// serve is /api/live: a server-sent event stream, a snapshot first.
func (h *hub) serve(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	ch := make(chan []byte, clientQueue)
	h.mu.Lock()
	snap := h.snap
	h.clients[ch] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		if _, ok := h.clients[ch]; ok {
			delete(h.clients, ch)
			close(ch)
		}
		h.mu.Unlock()
	}()
	if snap == nil {
		var err error
		if snap, err = event("snapshot", fleetData(h.fleet)); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write([]byte("retry: 2000\n\n")) || !write(snap) {
		return
	}
	keepalive := time.NewTicker(25 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keepalive.C:
			if !write([]byte(": keepalive\n\n")) {
				return
			}
		case b, ok := <-ch:
			if !ok || !write(b) {
				return
			}
		}
	}
}
