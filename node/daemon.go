package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/clock"
	"github.com/lab-fleet/lab/node/health"
	"github.com/lab-fleet/lab/node/nixsys"
	"github.com/lab-fleet/lab/node/nodemetrics"
	"github.com/lab-fleet/lab/proto"
)

// Daemon is one running labd.
type Daemon struct {
	cfg    Config
	log    *slog.Logger
	topics proto.Topics
	keys   pins
	nix    nixsys.System
	checks *health.Runner
	m      machine

	events chan any
	bus    *bus.Client

	mu       sync.Mutex // guards st, checkR and problems for status snapshots taken outside the loop
	st       state
	checkR   proto.CheckResults
	problems map[string]string // by source
	trouble  bus.Trouble       // the failed attempts before the current connection
	pubq     chan func(context.Context)
	stopping atomic.Bool // set before the goodbye: presence is no longer healed

	metrics      *nodemetrics.Set // counted by the loop (transitions) and intake (rejections)
	metricsDirty chan struct{}    // nudges the textfile writer (textfile.go); coalesced
	secrets      *secretKeeper    // the node's secrets (secretkeeper.go); runs its own goroutine

	stopHooks context.CancelFunc // stops the running pre/post_activate hooks; owned by the loop
}

// New validates cfg and prepares a daemon. sys is the Nix implementation
// (nil: real Nix from cfg.Nix).
func New(cfg Config, sys nixsys.System) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	if sys == nil {
		cfg.Nix.Logger = cfg.Logger
		n, err := nixsys.New(cfg.Nix)
		if err != nil {
			return nil, fmt.Errorf("nix: %w", err)
		}
		sys = n
	}
	topics, _ := proto.NewTopics(cfg.Prefix)
	keys := newPins(cfg.TrustedKeys, cfg.ControllerKeys)
	st, err := loadState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	secrets, err := newSecretKeeper(cfg.Secrets, cfg.StateDir, cfg.Logger.With("node", cfg.Name))
	if err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, secrets: secrets, log: cfg.Logger.With("node", cfg.Name), topics: topics, keys: keys, nix: sys,
		checks: &health.Runner{Clock: clock.Or(cfg.Clock)}, events: make(chan any, 64), st: st, pubq: make(chan func(context.Context), 256),
		metrics: nodemetrics.New(), metricsDirty: make(chan struct{}, 1),
		m: machine{groups: cfg.Groups, hooks: configuredHooks(cfg.Hooks), clock: clock.Or(cfg.Clock), timeouts: timeouts{cfg.FetchTimeout, cfg.ActivateTimeout, cfg.ConfirmTimeout},
			bootID: readBootID(cfg.BootIDFile)}}
	// Every configured check is in the status from the start, "not run"
	// (At 0) until it runs, so that a watcher can tell "no checks" from
	// "not checked yet" (labctl reboot waits for results after a boot).
	d.checkR = proto.CheckResults{}
	for _, c := range cfg.Checks {
		d.checkR[c.Name] = proto.CheckResult{Detail: "not run since labd started"}
	}
	for _, w := range cfg.Warnings() {
		d.log.Warn("configuration warning", "detail", w)
	}
	return d, nil
}

// Run connects and serves until ctx ends; then it publishes presence
// offline and disconnects cleanly.
func (d *Daemon) Run(ctx context.Context) error {
	bc, err := busConfig(d.cfg, d.log)
	if err != nil {
		return err
	}
	will, err := d.presence(false)
	if err != nil {
		return err
	}
	bc.Will = &bus.Message{Topic: d.topics.NodePresence(d.cfg.Name), Payload: will, Retain: true}
	bc.OnMessage, bc.OnUp, bc.OnDown = d.receive, d.onUp, d.metricsChanged
	c, err := bus.Dial(ctx, bc)
	if err != nil {
		return err
	}
	d.bus = c
	d.startSecrets(ctx)
	if err := c.Subscribe(ctx, d.filters()...); err != nil && !errors.Is(err, bus.ErrNotConnected) {
		d.log.Warn("subscribe", "err", err)
	}
	pubCtx, stopPub := context.WithCancel(context.Background())
	pubDone := make(chan struct{})
	go func() { d.publisher(pubCtx); close(pubDone) }()
	tf := d.newTextfile()
	tfCtx, stopTF := context.WithCancel(context.Background())
	tfDone := make(chan struct{})
	go func() { d.textfile(tfCtx, tf); close(tfDone) }()
	ckCtx, stopChecks := context.WithCancel(ctx)
	defer stopChecks()
	go d.idleChecks(ckCtx)
	d.send(evSecrets{present: d.secrets.present()})
	d.send(evResume{})
	d.log.Info("labd started", "groups", d.cfg.Groups, "state", d.st.Exec.State, "applied_gen", d.st.AppliedGen)
	runErr := d.loop(ctx)

	// Shut down: drain queued publishes, say goodbye, disconnect, and
	// leave a metrics file that says so.
	stopPub()
	<-pubDone
	stopTF()
	<-tfDone
	defer func() { tf.closed = true; tf.write(d) }()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d.stopping.Store(true)
	if runErr == nil { // a restart comes right back: no offline blip
		if off, err := d.presence(false); err == nil {
			_ = c.Publish(sctx, d.topics.NodePresence(d.cfg.Name), off, true)
		}
	}
	if err := c.Close(sctx); err != nil && runErr == nil {
		return err
	}
	return runErr
}

func (d *Daemon) filters() []string {
	t, n := d.topics, d.cfg.Name
	f := []string{t.NodeDesired(n), t.NodeCmd(n), t.AllCmd(), t.NodePresence(n), t.NodeSecrets(n)}
	for _, g := range d.cfg.Groups {
		f = append(f, t.GroupGate(g), t.GroupCmd(g))
	}
	return f
}

// onUp runs after every (re)connect: presence online and a fresh status.
// The subscriptions were re-sent by the bus, so retained desired state and
// gates arrive again and are reconciled by the loop.
//
// After a session takeover (another labd with this name connected), the
// connection this one threw out leaves its Last Will — offline — which the
// broker may publish after this online; and the other labd published its
// own status. Both are said again once that has settled.
func (d *Daemon) onUp(ctx context.Context, c *bus.Client) {
	d.log.Info("connected to the broker")
	d.mu.Lock()
	d.trouble = c.LastTrouble()
	d.mu.Unlock()
	d.announce(ctx, c)
	if c.Takeovers() == 0 {
		return
	}
	select {
	case <-time.After(takeoverSettle):
	case <-ctx.Done():
		return
	}
	if c.Connected() {
		d.announce(ctx, c)
	}
}

// takeoverSettle is how long after a reconnect that followed a takeover
// presence and status are published again.
const takeoverSettle = 2 * time.Second

// announce publishes presence online and the current status.
func (d *Daemon) announce(ctx context.Context, c *bus.Client) {
	if on, err := d.presence(true); err == nil {
		if err := c.Publish(ctx, d.topics.NodePresence(d.cfg.Name), on, true); err != nil {
			d.log.Warn("publish presence", "err", err)
		}
	}
	d.enqueueStatus()
}

func (d *Daemon) send(ev any) { d.events <- ev }

// loop is the one goroutine that owns the state.
// ErrRestart is returned by Run when labd stopped to be restarted by its
// supervisor into a new version of itself (see Config.RestartCheck).
var ErrRestart = errors.New("labd was updated by the activation: restarting into the new version")

func (d *Daemon) loop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-d.events:
			if ed, ok := ev.(evDesired); ok {
				ed.current, _ = d.nix.Current()
				ev = ed
			}
			d.mu.Lock()
			old := d.st
			next, effs := d.m.next(d.st, ev)
			d.st = next
			d.mu.Unlock()
			if next.Exec.State != old.Exec.State {
				d.log.Info("execution", "rollout", next.Exec.Rollout, "gen", next.Exec.Gen, "from", old.Exec.State, "to", next.Exec.State, "error", next.Exec.Error)
			}
			if next.Hooks == "" && d.stopHooks != nil {
				d.stopHooks() // the execution left its hooks (a deadline): kill what still runs
				d.stopHooks = nil
			}
			d.perform(ctx, next, effs)
			// An execution just ended: if it updated labd itself, stop so
			// that the supervisor starts the new version. Status and
			// events are already queued and are flushed on the way out.
			if next.Exec.State != old.Exec.State && next.Exec.State.Terminal() && d.cfg.RestartCheck != nil {
				if restart, why := d.cfg.RestartCheck(); restart {
					d.log.Info("restarting into the new labd", "why", why)
					return ErrRestart
				}
			}
		}
	}
}

// perform runs the effects of one transition, in order. Persisting comes
// first and is synchronous; long work runs in goroutines that report back.
func (d *Daemon) perform(ctx context.Context, s state, effs []effect) {
	held := false // work not started because its state could not be saved
	for _, e := range effs {
		switch e := e.(type) {
		case effPersist:
			err := saveState(d.cfg.StateDir, s)
			if err != nil {
				d.log.Error("cannot persist state", "err", err)
				if s.Exec.State == proto.StateFetching || s.Exec.State == proto.StateQueued {
					held = true
					ev := evPersistFailed{gen: s.Exec.Gen, err: err}
					go d.sendCtx(ctx, ev)
				}
			}
			// Reported in status until a save succeeds again: a node that
			// cannot remember what it applied must say so.
			if d.setProblem("persist", err) {
				d.enqueueStatus()
			}
		case effStatus:
			d.enqueueStatus()
		case effEvent:
			d.metrics.Transition(e.from, e.to)
			d.enqueueEvent(s.Exec.Rollout, s.Exec.Gen, e.from, e.to, e.detail)
		case effReject:
			d.reject(e.rollout, e.gen, e.reason)
		case effAck:
			d.ack(e.ack, e.from, e.to, e.detail)
		case effTimer:
			ev := evTimeout{gen: e.gen, phase: e.phase}
			d.m.clock.AfterFunc(e.d, func() { d.sendCtx(ctx, ev) })
		case effFetch:
			if held {
				continue
			}
			go func() { d.sendCtx(ctx, d.fetch(ctx, e)) }()
		case effActivate:
			go func() { d.sendCtx(ctx, d.activate(ctx, e)) }()
		case effChecks:
			go func() { d.sendCtx(ctx, d.verify(ctx, e)) }()
		case effRollback:
			go func() { d.sendCtx(ctx, d.rollback(ctx, e)) }()
		case effHooks:
			hctx, stop := context.WithCancel(ctx)
			d.stopHooks = stop
			go func() { defer stop(); d.sendCtx(ctx, d.runHooks(hctx, e)) }()
		case effReboot:
			go d.reboot(ctx, e)
		case effBootChecks:
			go d.bootChecks(ctx)
		}
	}
}

func (d *Daemon) sendCtx(ctx context.Context, ev any) {
	select {
	case d.events <- ev:
	case <-ctx.Done():
	}
}

func (d *Daemon) runDir() string { return filepath.Join(d.cfg.StateDir, "activation") }

// setProblem records (err != nil) or clears a problem of the node itself;
// it reports whether that changed anything.
func (d *Daemon) setProblem(source string, err error) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.problems == nil {
		d.problems = map[string]string{}
	}
	old, had := d.problems[source]
	if err == nil {
		delete(d.problems, source)
		return had
	}
	msg := tail(err.Error(), 500)
	d.problems[source] = msg
	return !had || old != msg
}
