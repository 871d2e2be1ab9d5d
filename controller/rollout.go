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
	// By is who asked for a Cancel, named in its reason (default the
	// controller's own name).
	By string
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

// run drives one rollout: it owns the rollout's state (st), feeds it the
// facts it learns from the bus and the clock (next), and performs the
// actions next returns. Only the goroutine that follows the rollout
// touches it.
type run struct {
	c     *Controller
	opts  Options
	log   *slog.Logger
	st    *rolloutState
	facts chan request // requests for the goroutine that owns the run (pause, resume)
	seq   uint64       // last gate seq
	dirty bool         // progress not yet saved and published
	// rolledBack is the result of switching back the targets that
	// succeeded (a halted rollout that rolls back on failure).
	rolledBack *Result
	// reconnects is the count of the bus's reconnects (Fleet.Reconnects)
	// that follow has handled: the ones before the run are not its own.
	reconnects int
}

// newRun returns the run of st, driven with opts (defaults filled).
func (c *Controller) newRun(st *rolloutState, opts Options) *run {
	opts.Clock = clock.Or(opts.Clock)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &run{c: c, opts: opts, st: st, log: opts.Logger.With("rollout", st.plan.ID)}
	r.reconnects, _ = c.fleet.Reconnects()
	return r
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
	opts.Clock = clock.Or(opts.Clock)
	if opts.NoWait && !plan.due(opts.Clock.Now()) {
		return nil, ErrNoWaitNeedsOneWave
	}
	if rs, ok := c.fleet.Rollout(plan.ID); ok {
		return nil, fieldErr(FieldRolloutID, "%w: %q is on the broker already (%s, created %s): choose another %s",
			ErrRolloutExists, plan.ID, rs.State, time.UnixMilli(rs.CreatedAt).UTC().Format(time.RFC3339), FieldRolloutID)
	}
	st := newRolloutState(plan, waves, opts.Clock.Now())
	if opts.Key != nil {
		st.keyID = opts.Key.ID
	}
	c.chooseGates(st)
	r := c.newRun(st, opts)
	if err := r.begin(ctx); err != nil {
		return nil, err
	}
	if opts.NoWait {
		r.st.update(c.fleet, nil)
		return r.st.result(false), r.save()
	}
	return r.follow(ctx)
}

// begin saves the run's first record (nothing is published before it is
// safe), then publishes the Desired of the first wave and of every gated
// target and opens the first wave, unless the rollout waits for its time.
func (r *run) begin(ctx context.Context) error {
	if err := r.create(); err != nil {
		return err
	}
	_, err := r.step(ctx, factStart{})
	return err
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
	r.st.paused = rec.Paused
	r.facts = make(chan request)
	if _, err := r.step(ctx, factResumed{pending: rec.State == proto.RolloutPending}); err != nil {
		return nil, err
	}
	return &Started{r: r}, nil
}

// fromRecord rebuilds the run a record describes (Resume, Cancel).
func (c *Controller) fromRecord(rec *Record, opts Options) (*run, error) {
	if err := rec.CanContinue(opts.Key != nil || opts.GateKey != nil); err != nil {
		return nil, err
	}
	plan := rec.Plan
	if err := plan.Validate(); err != nil {
		return nil, err
	}
	st := newRolloutState(plan, rec.Waves, rec.Created)
	st.gates, st.keyID = rec.Gates, rec.KeyID
	st.opened, st.openedAt = rec.Opened, rec.OpenedAt
	for _, n := range rec.Gated {
		st.gated[n] = true
	}
	maps.Copy(st.gens, rec.Gens)
	st.signed, st.rollback, st.submitter = rec.Signed, rec.Rollback, rec.Submitter
	r := c.newRun(st, opts)
	if opts.Key != nil && rec.KeyID != "" && opts.Key.ID != rec.KeyID {
		r.log.Warn("the rollout was signed with another key: its gates and commands will be signed with this one", "signed_with", rec.KeyID, "key", opts.Key.ID)
	}
	return r, nil
}

// create saves the run's first record: an id used before is refused.
func (r *run) create() error {
	if r.opts.Store == nil {
		return nil
	}
	return r.opts.Store.Create(r.st.record(r.opts.Clock.Now(), false))
}

func (r *run) save() error { return r.saveDone(false) }

func (r *run) saveDone(done bool) error {
	if r.opts.Store == nil {
		return nil
	}
	rec := r.st.record(r.opts.Clock.Now(), done)
	rec.Result.Rollback = r.rolledBack
	if err := r.opts.Store.Save(rec); err != nil {
		return fmt.Errorf("save rollout %s: %w", r.st.plan.ID, err)
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

// chooseGates decides how each target's wave opens. A single wave needs no
// gate. Otherwise a target whose groups are known from its retained status
// is opened by its group's Gate (one publish per group per wave); a target
// with no known group gets its Desired, for wave 0, when its wave opens.
func (c *Controller) chooseGates(st *rolloutState) {
	if len(st.waves) == 1 {
		return
	}
	chosen := map[string]bool{}
	for _, wave := range st.waves {
		for _, n := range wave {
			v, _ := c.fleet.Get(n)
			if v.Status == nil || len(v.Status.Groups) == 0 {
				continue
			}
			st.gated[n] = true
			if slices.ContainsFunc(v.Status.Groups, func(g string) bool { return chosen[g] }) {
				continue
			}
			g := v.Status.Groups[0]
			chosen[g] = true
			st.gates = append(st.gates, g)
		}
	}
}

// request is a fact sent to the goroutine that owns the run (pause,
// resume); done is closed once it was acted on.
type request struct {
	f    fact
	done chan struct{}
}

// follow is the rollout's loop: it turns what the bus and the clock tell
// into facts for next (every change of the fleet's view, a tick a second,
// a cancel seen elsewhere, the end of a reconnect's retained flood, the
// overall timeout, requests) and performs the actions next returns, until
// the rollout ends. The transport's own upkeep is here too: coalescing
// progress saves and publishes, and reading the retained status again
// when it has been quiet too long.
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
	var lost, back time.Time // set after a reconnect: check what the broker still holds
	f := fact(factViews{r.c.fleet})
	for {
		if n, at := r.c.fleet.Reconnects(); n > r.reconnects {
			r.reconnects, lost, back = n, at, time.Now()
		}
		if done, err := r.step(ctx, f); done || err != nil {
			return r.result(), err
		}
		// The broker sends every retained message again after a
		// reconnect: judge what it lost once they stopped arriving.
		quiet := time.Since(later(r.c.fleet.LastMessage(), back))
		if !lost.IsZero() && (quiet >= reassertQuiet || time.Since(back) >= reassertWait) {
			f, lost = factBrokerBack{lost}, time.Time{}
			continue
		}
		if by, ok := r.cancelledElsewhere(); ok && !r.st.halted && r.st.cancelledBy == "" {
			f = factCancelled{by}
			continue
		}
		if r.dirty && time.Since(lastPublish) > 200*time.Millisecond {
			r.saveAndPublish(ctx)
			lastPublish, r.dirty = time.Now(), false
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
		var req request
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("rollout %s: %w", r.st.plan.ID, ctx.Err())
		case <-overall:
			f = factTimeout{}
		case <-changes:
			f = factViews{r.c.fleet}
		case <-tick.C:
			f = factTick{}
		case req = <-r.facts:
			f = req.f
		}
		if req.done != nil {
			_, err := r.step(ctx, f)
			close(req.done)
			if err != nil || r.st.ended {
				return r.result(), err
			}
			f = factViews{r.c.fleet}
		}
	}
}

// step gives the state one fact and performs the actions it returns, in
// order; done reports that the rollout ended.
func (r *run) step(ctx context.Context, f fact) (done bool, err error) {
	for _, a := range next(r.st, r.opts.Clock.Now(), f) {
		if err := r.perform(ctx, a); err != nil {
			return false, err
		}
	}
	return r.st.ended, nil
}

// perform does one action of next.
func (r *run) perform(ctx context.Context, a action) error {
	switch a := a.(type) {
	case actPublishDesired:
		gens, err := r.publishDesired(ctx, a.nodes)
		next(r.st, r.opts.Clock.Now(), factPublished{gens})
		return err
	case actPublishGates:
		return r.publishGates(ctx, a.open, a.state)
	case actClearUnstarted:
		return r.clearUnstarted(ctx)
	case actReassert:
		err := r.reassert(ctx, a.lost)
		if err != nil && !a.resume {
			r.log.Warn("publish again what the broker lost", "err", err)
			return nil
		}
		return err
	case actSave:
		err := r.saveDone(a.done)
		if err != nil && a.done {
			r.log.Warn("save rollout", "err", err)
			return nil
		}
		return err
	case actPublishState:
		err := r.c.publishState(ctx, r.st, a.done)
		if err != nil && a.done {
			r.log.Warn("publish final rollout state", "err", err)
			return nil
		}
		return err
	case actDirty:
		r.dirty = true
	case actFlush:
		r.saveAndPublish(ctx)
	case actProgress:
		if r.opts.Progress != nil {
			r.opts.Progress(a.r)
		}
	case actWave:
		if r.opts.OnWave != nil {
			r.opts.OnWave(a.ev)
		}
	case actLog:
		r.log.Log(ctx, a.level, a.msg, a.args...)
	case actRollback:
		res, err := r.rollbackSwitched(ctx)
		if err != nil {
			// Said, and the record still saved: whoever waits for the
			// way back learns it ended.
			r.log.Error("switch the targets that succeeded back", "err", err)
		}
		r.rolledBack = res
		next(r.st, r.opts.Clock.Now(), factRolledBack{})
	case actFinish:
		r.log.Debug("rollout ended", "outcome", r.st.result(true).Outcome)
	default:
		return fmt.Errorf("controller: unknown rollout action %T", a)
	}
	return nil
}

// result is the run's result: final once the rollout ended.
func (r *run) result() *Result {
	res := r.st.result(r.st.ended)
	res.Rollback = r.rolledBack
	return res
}

// saveAndPublish saves the record and publishes the retained state.
func (r *run) saveAndPublish(ctx context.Context) {
	if err := r.save(); err != nil {
		r.log.Warn("save rollout", "err", err)
	}
	if err := r.c.publishState(ctx, r.st, false); err != nil {
		r.log.Warn("publish rollout state", "err", err)
	}
}
