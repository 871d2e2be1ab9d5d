package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/lab-fleet/lab/internal/clock"
	"github.com/lab-fleet/lab/proto"
)

// Options tune a rollout run.
type Options struct {
	Key *proto.PrivateKey // operator key signing every Desired (and Gate, unless GateKey); nil = unsigned
	// GateKey signs gates and commands (the controller service's own
	// key, DESIGN §9); nil = Key.
	GateKey  *proto.PrivateKey
	Timeout  time.Duration    // overall limit for following the rollout; 0 = only the wave deadlines
	NoWait   bool             // publish and return at once (single-wave plans only)
	Progress func(NodeResult) // called on every change of a target's state
	OnWave   func(WaveEvent)  // called when a wave opens and when the rollout halts
	Clock    clock.Clock      // default the system clock
	Logger   *slog.Logger
	Store    Store // where the rollout's record is saved at every step (nil: nowhere)
}

// WaveEvent tells that wave Index (0-based) of Total opened, or that the
// rollout halted (Halted, with Reason).
type WaveEvent struct {
	Index, Total int
	Nodes        []string
	Halted       bool
	Reason       string
}

var (
	// ErrKeyNeeded refuses to resume or cancel a signed rollout without
	// a key: what it would publish unsigned, nodes that pin keys reject.
	ErrKeyNeeded = errors.New("give the " + string(FieldKey) + " that signed it")
	// ErrRolloutEnded refuses to resume or cancel a rollout that is over.
	ErrRolloutEnded = errors.New("nothing is left to resume or cancel")
)

// ErrNoWaitNeedsOneWave refuses --no-wait for plans of several waves: the
// later waves need a controller to open them.
var ErrNoWaitNeedsOneWave = errors.New("publishing without waiting needs a single-wave plan: later waves are opened by a running controller")

// Controller drives rollouts over a Bus, reading progress from a Fleet fed
// by the same connection.
type Controller struct {
	bus    Bus
	fleet  *Fleet
	topics proto.Topics
	from   string
}

// New returns a controller; from names it in envelopes.
func New(b Bus, fleet *Fleet, topics proto.Topics, from string) *Controller {
	return &Controller{bus: b, fleet: fleet, topics: topics, from: from}
}

// run is one rollout in progress.
type run struct {
	c         *Controller
	plan      Plan
	opts      Options
	log       *slog.Logger
	tr        *tracker
	gated     map[string]bool // targets opened by a group gate (their Desired is published at start)
	gates     []string        // the groups whose gates open the gated targets
	keyID     string          // the key that signed the Desired states ("" unsigned)
	submitter string          // who submitted it to a controller service ("": run by labctl)
	begun     bool            // the first wave was published (a scheduled rollout waits for its time)
	outside   bool            // a wave is waiting for the maintenance window (logged once)
	facts     chan func(*run) // requests for the goroutine that owns the run (pause, resume)
	seq       uint64          // last gate seq
	// signed holds the Desired states the operator signed, sealed, by
	// node (a submitted rollout: the controller cannot sign them), with
	// their gens; nil = signed here with opts.Key. rollback holds the
	// signed way back of each target (--on-failure rollback).
	signed   map[string][]byte
	rollback map[string][]byte
	// reconnects is the count of the bus's reconnects (Fleet.Reconnects)
	// that follow has handled: the ones before the run are not its own.
	reconnects int
}

// gateKey is the key that signs gates and commands.
func (r *run) gateKey() *proto.PrivateKey {
	if r.opts.GateKey != nil {
		return r.opts.GateKey
	}
	return r.opts.Key
}

// Run publishes the plan and follows it: every target's Desired at start
// (retained; targets of later waves wait for their group's gate), then one
// wave after another until every wave is done, the failure threshold halts
// the rollout, or opts.Timeout passes.
func (c *Controller) Run(ctx context.Context, plan Plan, opts Options) (*Result, error) {
	plan.Machines = c.machines(plan)
	if err := plan.Validate(); err != nil {
		return nil, err
	}
	waves, err := plan.Waves()
	if err != nil {
		return nil, err
	}
	if opts.NoWait && len(waves) > 1 {
		return nil, ErrNoWaitNeedsOneWave
	}
	if opts.NoWait && !plan.due(time.Now()) {
		return nil, ErrNoWaitNeedsOneWave
	}
	opts.Clock = clock.Or(opts.Clock)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &run{c: c, plan: plan, opts: opts, log: opts.Logger.With("rollout", plan.ID),
		tr: newTracker(plan, waves, opts.Clock.Now()), gated: map[string]bool{}}
	if opts.Key != nil {
		r.keyID = opts.Key.ID
	}
	r.reconnects, _ = c.fleet.Reconnects()
	if rs, ok := c.fleet.Rollout(plan.ID); ok {
		return nil, fieldErr(FieldRolloutID, "%w: %q is on the broker already (%s, created %s): choose another %s",
			ErrRolloutExists, plan.ID, rs.State, time.UnixMilli(rs.CreatedAt).UTC().Format(time.RFC3339), FieldRolloutID)
	}
	r.chooseGates()
	if err := r.begin(ctx); err != nil {
		return nil, err
	}
	if opts.NoWait {
		r.tr.update(c.fleet, nil)
		return r.tr.result(false), r.save()
	}
	return r.followAndFinish(ctx)
}

// begin saves the run's first record, publishes the Desired of the
// first wave and of every gated target, and opens the first wave.
func (r *run) begin(ctx context.Context) error {
	if err := r.create(); err != nil {
		return err // nothing is published before the record is safe
	}
	if now := r.opts.Clock.Now(); !r.plan.due(now) {
		r.log.Info("rollout scheduled: nothing is published before its time", "not_before", r.plan.NotBefore,
			"window", r.plan.Window.String(), "first", r.plan.Window.Next(later(now, r.plan.NotBefore)).Format(time.RFC3339))
		return r.c.publishState(ctx, r.tr, false)
	}
	return r.publishFirst(ctx)
}

// publishFirst publishes the Desired of the first wave and of every
// gated target, and opens the first wave.
func (r *run) publishFirst(ctx context.Context) error {
	r.begun = true
	waves := r.tr.waves
	if err := r.publishDesired(ctx, func(n string) bool { return len(waves) == 1 || r.gated[n] }); err != nil {
		return err
	}
	r.log.Debug("rollout published", "targets", len(r.plan.Targets), "waves", len(waves), "gates", r.gates)
	return r.openWave(ctx, 0)
}

// Resume continues a rollout from its record: the Desired states are
// already retained (those the broker lost are published again), so it
// republishes the gates of the waves opened so far and follows from
// there. A pending rollout (followed to its end with targets still
// offline) is followed again for a whole wave deadline. A rollout that is
// over is refused.
func (c *Controller) Resume(ctx context.Context, rec *Record, opts Options) (*Result, error) {
	st, err := c.Restart(ctx, rec, opts)
	if err != nil {
		return nil, err
	}
	return st.Follow(ctx)
}

// Restart is Resume up to the following: it publishes again what is
// missing and reopens the waves opened so far; Follow drives the rest.
func (c *Controller) Restart(ctx context.Context, rec *Record, opts Options) (*Started, error) {
	r, err := c.fromRecord(rec, opts)
	if err != nil {
		return nil, err
	}
	r.tr.paused = rec.Paused
	r.facts = make(chan func(*run))
	openedAt := rec.OpenedAt
	if rec.State == proto.RolloutPending {
		openedAt = r.opts.Clock.Now()
	}
	// What was published before may be gone from the broker (restarted
	// on an empty or older store meanwhile): the view is what it sent on
	// this connection, so anything published and not in it goes again.
	if rec.Opened == 0 && !r.plan.due(r.opts.Clock.Now()) {
		r.log.Info("rollout resumed: still scheduled", "not_before", r.plan.NotBefore, "window", r.plan.Window.String())
		return &Started{r: r}, nil // follow publishes it when it is due
	}
	r.begun = true
	if err := r.reassert(ctx, time.Time{}); err != nil {
		return nil, err
	}
	// A run stopped between saving its record and publishing: publish
	// what is missing (a gen is recorded only once published).
	if err := r.publishDesired(ctx, func(n string) bool {
		due := len(rec.Waves) == 1 || r.gated[n] || r.tr.wave[n] < rec.Opened
		return due && r.tr.gens[n] == 0
	}); err != nil {
		return nil, err
	}
	if rec.Opened == 0 {
		if err := r.openWave(ctx, 0); err != nil {
			return nil, err
		}
	} else {
		r.tr.open(rec.Opened-1, openedAt)
		if err := r.publishGates(ctx, rec.Opened, proto.GateRunning); err != nil {
			return nil, err
		}
		r.log.Info("rollout resumed", "wave", rec.Opened, "of", len(rec.Waves))
	}
	return &Started{r: r}, nil
}

// fromRecord rebuilds the run a record describes (Resume, Cancel).
func (c *Controller) fromRecord(rec *Record, opts Options) (*run, error) {
	if err := rec.CanContinue(opts.Key != nil || opts.GateKey != nil); err != nil {
		return nil, err
	}
	opts.Clock = clock.Or(opts.Clock)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	plan := rec.Plan
	if err := plan.Validate(); err != nil {
		return nil, err
	}
	r := &run{c: c, plan: plan, opts: opts, log: opts.Logger.With("rollout", plan.ID),
		tr: newTracker(plan, rec.Waves, rec.Created), gated: map[string]bool{}, gates: rec.Gates, keyID: rec.KeyID}
	if opts.Key != nil && rec.KeyID != "" && opts.Key.ID != rec.KeyID {
		r.log.Warn("the rollout was signed with another key: its gates and commands will be signed with this one", "signed_with", rec.KeyID, "key", opts.Key.ID)
	}
	r.reconnects, _ = c.fleet.Reconnects()
	for _, n := range rec.Gated {
		r.gated[n] = true
	}
	maps.Copy(r.tr.gens, rec.Gens)
	r.signed, r.rollback, r.submitter = rec.Signed, rec.Rollback, rec.Submitter
	return r, nil
}

func (r *run) followAndFinish(ctx context.Context) (*Result, error) {
	res, err := r.follow(ctx)
	if err != nil {
		return nil, err
	}
	plan := r.plan
	if res.Halted && plan.OnFailure == OnFailureRollback && !r.tr.cancelled {
		res.Rollback, err = r.rollbackSwitched(ctx)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// record is the run's state for the store.
func (r *run) record(done bool) *Record {
	t := r.tr
	rec := &Record{Plan: r.plan, Waves: t.waves, Gates: r.gates, Gens: maps.Clone(t.gens), Opened: t.opened, OpenedAt: t.openedAt,
		Created: t.created, Updated: r.opts.Clock.Now(), State: proto.RolloutRunning, Reason: t.reason, KeyID: r.keyID, Result: t.result(done),
		Submitter: r.submitter, Signed: r.signed, Rollback: r.rollback, Paused: t.paused}
	for n := range r.gated {
		rec.Gated = append(rec.Gated, n)
	}
	slices.Sort(rec.Gated)
	if done {
		rec.State = rec.Result.Outcome.Phase()
	}
	return rec
}

// create saves the run's first record: an id used before is refused.
func (r *run) create() error {
	if r.opts.Store == nil {
		return nil
	}
	return r.opts.Store.Create(r.record(false))
}

func (r *run) save() error { return r.saveDone(false) }

func (r *run) saveDone(done bool) error {
	if r.opts.Store == nil {
		return nil
	}
	if err := r.opts.Store.Save(r.record(done)); err != nil {
		return fmt.Errorf("save rollout %s: %w", r.plan.ID, err)
	}
	return nil
}

// machines completes the plan's planning metadata with what each target
// declares in its retained status (its lab.machine options).
func (c *Controller) machines(plan Plan) map[string]Machine {
	out := maps.Clone(plan.Machines)
	if out == nil {
		out = map[string]Machine{}
	}
	for n := range plan.Targets {
		if _, ok := out[n]; ok {
			continue
		}
		if v, _ := c.fleet.Get(n); v.Status != nil {
			m := v.Status.Machine
			out[n] = Machine{Name: n, RebootOrder: m.RebootOrder, Dependencies: m.Dependencies}
		}
	}
	return out
}

// adopt makes a node that joined a group the rollout targets (--on
// @group with one system for all) a target of the current wave.
func (r *run) adopt(ctx context.Context) error {
	if r.tr.opened == 0 || r.tr.halted || r.signed != nil {
		// A submitted rollout has only the Desired states the operator
		// signed: the controller cannot sign one for a newcomer.
		return nil
	}
	for group, toplevel := range r.plan.Groups {
		for _, n := range r.c.fleet.Members(group) {
			if _, ok := r.plan.Targets[n]; ok {
				continue
			}
			r.plan.Targets[n] = toplevel
			r.tr.adopt(n, toplevel)
			if err := r.publishOne(ctx, n, toplevel, 0, r.opts.Clock.Now()); err != nil {
				return err
			}
			r.log.Info("node joined a targeted group: added to the current wave", "node", n, "group", group)
			if err := r.save(); err != nil {
				return err
			}
		}
	}
	return nil
}

// chooseGates decides how each target's wave opens. A single wave needs no
// gate. Otherwise a target whose groups are known from its retained status
// is opened by its group's Gate (one publish per group per wave); a target
// with no known group gets its Desired, for wave 0, when its wave opens.
func (r *run) chooseGates() {
	if len(r.tr.waves) == 1 {
		return
	}
	chosen := map[string]bool{}
	for _, wave := range r.tr.waves {
		for _, n := range wave {
			v, _ := r.c.fleet.Get(n)
			if v.Status == nil || len(v.Status.Groups) == 0 {
				continue
			}
			r.gated[n] = true
			if slices.ContainsFunc(v.Status.Groups, func(g string) bool { return chosen[g] }) {
				continue
			}
			g := v.Status.Groups[0]
			chosen[g] = true
			r.gates = append(r.gates, g)
		}
	}
}

// follow recomputes progress from the retained status on every change and
// once a second, opens the next wave when the current one is done, and
// halts when the failure threshold is crossed.
func (r *run) follow(ctx context.Context) (*Result, error) {
	var overall <-chan time.Time
	if r.opts.Timeout > 0 {
		t := time.NewTimer(r.opts.Timeout)
		defer t.Stop()
		overall = t.C
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	changes, unwatch := r.c.fleet.Watch()
	defer unwatch()
	lastPublish, lastResync := time.Time{}, time.Now()
	dirty := false           // progress not yet published and saved
	var lost, back time.Time // set after a reconnect: check what the broker still holds
	for {
		if n, at := r.c.fleet.Reconnects(); n > r.reconnects {
			r.reconnects, lost, back = n, at, time.Now()
		}
		if err := r.adopt(ctx); err != nil {
			return nil, err
		}
		if r.tr.update(r.c.fleet, r.opts.Progress) {
			dirty = true
		}
		now := r.opts.Clock.Now()
		// The broker sends every retained message again after a
		// reconnect: judge what it lost once they stopped arriving.
		quiet := time.Since(later(r.c.fleet.LastMessage(), back))
		if !lost.IsZero() && (quiet >= reassertQuiet || time.Since(back) >= reassertWait) {
			if err := r.reassert(ctx, lost); err != nil {
				r.log.Warn("publish again what the broker lost", "err", err)
			}
			lost = time.Time{}
		}
		by, _ := r.cancelledElsewhere()
		sit := situation{Begun: r.begun, Due: r.plan.due(now), WindowOpen: r.plan.Window.Contains(now), Halted: r.tr.halted,
			CancelledBy: by, Exceeded: r.tr.exceeded(), Rollback: r.plan.OnFailure == OnFailureRollback,
			Opened: r.tr.opened, Waves: len(r.tr.waves), WaveDone: r.tr.waveDone(now), Paused: r.tr.paused != ""}
		switch st := decide(sit); st {
		case stepFinish:
			return r.finish(ctx)
		case stepPublishFirst:
			if err := r.publishFirst(ctx); err != nil {
				return nil, err
			}
			continue
		case stepCancelled:
			r.tr.cancelled = true
			r.tr.halt(cancelledBy + by)
			r.log.Debug("rollout cancelled", "by", by)
			if r.opts.OnWave != nil {
				r.opts.OnWave(WaveEvent{Index: r.tr.opened - 1, Total: len(r.tr.waves), Halted: true, Reason: r.tr.reason})
			}
			dirty = true
			continue
		case stepHalt:
			if err := r.halt(ctx, r.tr.failureReason()); err != nil {
				return nil, err
			}
			dirty = true
			continue
		case stepOpenWave:
			r.outside = false
			if err := r.openWave(ctx, r.tr.opened); err != nil {
				return nil, err
			}
			continue
		case stepHoldWindow:
			if !r.outside {
				r.outside = true
				r.log.Info("outside the maintenance window: the next wave waits for it", "window", r.plan.Window.String(),
					"opens", r.plan.Window.Next(now).Format(time.RFC3339))
			}
		}
		if dirty && time.Since(lastPublish) > 200*time.Millisecond {
			r.saveAndPublish(ctx)
			lastPublish, dirty = time.Now(), false
		}
		if now := time.Now(); needResync(r.c.fleet.LastMessage(), lastResync, now) {
			// Quiet while targets still run: a broker under a burst may
			// have dropped some of their statuses (a full client queue).
			// Subscribing again makes it send every retained status anew.
			r.log.Debug("no news for a while: reading the retained status again")
			if err := r.c.fleet.Subscribe(ctx, r.c.bus); err != nil {
				r.log.Warn("resubscribe", "err", err)
			}
			lastResync = now
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("rollout %s: %w", r.plan.ID, ctx.Err())
		case <-overall:
			return r.finish(ctx)
		case <-changes:
		case <-tick.C:
		case f := <-r.facts:
			f(r)
		}
	}
}

// saveAndPublish saves the record and publishes the retained state.
func (r *run) saveAndPublish(ctx context.Context) {
	if err := r.save(); err != nil {
		r.log.Warn("save rollout", "err", err)
	}
	if err := r.c.publishState(ctx, r.tr, false); err != nil {
		r.log.Warn("publish rollout state", "err", err)
	}
}

func (r *run) finish(ctx context.Context) (*Result, error) {
	// Saved first: whoever sees the final state and asks for the record
	// (labctl publish following a controller service) finds its outcome.
	if err := r.saveDone(true); err != nil {
		r.log.Warn("save rollout", "err", err)
	}
	if err := r.c.publishState(ctx, r.tr, true); err != nil {
		r.log.Warn("publish final rollout state", "err", err)
	}
	res := r.tr.result(true)
	r.log.Debug("rollout ended", "outcome", res.Outcome)
	return res, nil
}
