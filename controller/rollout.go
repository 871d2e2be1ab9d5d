package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

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
	Clock    func() time.Time // default time.Now
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
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &run{c: c, plan: plan, opts: opts, log: opts.Logger.With("rollout", plan.ID),
		tr: newTracker(plan, waves, opts.Clock()), gated: map[string]bool{}}
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
	if now := r.opts.Clock(); !r.plan.due(now) {
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
		openedAt = r.opts.Clock()
	}
	// What was published before may be gone from the broker (restarted
	// on an empty or older store meanwhile): the view is what it sent on
	// this connection, so anything published and not in it goes again.
	if rec.Opened == 0 && !r.plan.due(r.opts.Clock()) {
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
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
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
		Created: t.created, Updated: r.opts.Clock(), State: proto.RolloutRunning, Reason: t.reason, KeyID: r.keyID, Result: t.result(done),
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
			if err := r.publishOne(ctx, n, toplevel, 0, r.opts.Clock()); err != nil {
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

// publishInFlight bounds the Desired publishes awaiting their
// acknowledgement: one at a time, a 10,000-node rollout waits 10,000
// round trips (and the broker's store) before the last node hears of it.
const publishInFlight = 64

// publishDesired signs and publishes the Desired of every target that
// include selects, retained, up to publishInFlight at once.
func (r *run) publishDesired(ctx context.Context, include func(string) bool) error {
	now := r.opts.Clock()
	type job struct {
		node string
		wave int
	}
	var jobs []job
	for i, wave := range r.tr.waves {
		for _, n := range wave {
			if !include(n) {
				continue
			}
			w := 0
			if r.gated[n] {
				w = i + 1
			}
			jobs = append(jobs, job{n, w})
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		gens     = make(map[string]uint64, len(jobs))
		slots    = make(chan struct{}, publishInFlight)
	)
	for _, j := range jobs {
		// Signed here, in order: the generation depends on the fleet's
		// view and the tracker, which only this goroutine touches.
		topic, b, gen, err := r.signOne(j.node, r.plan.Targets[j.node], j.wave, now)
		if err != nil {
			cancel()
			wg.Wait()
			return err
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			err := r.c.bus.Publish(ctx, topic, b, true)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("publish desired for %s: %w", j.node, err)
				}
				cancel()
				return
			}
			gens[j.node] = gen
		}()
	}
	wg.Wait()
	for n, g := range gens {
		r.tr.gens[n] = g
	}
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

func (r *run) publishOne(ctx context.Context, n, toplevel string, wave int, now time.Time) error {
	topic, b, gen, err := r.signOne(n, toplevel, wave, now)
	if err != nil {
		return err
	}
	if err := r.c.bus.Publish(ctx, topic, b, true); err != nil {
		return fmt.Errorf("publish desired for %s: %w", n, err)
	}
	r.tr.gens[n] = gen
	return nil
}

// signOne builds, signs and encodes the Desired of node n, with a gen
// newer than any it had.
func (r *run) signOne(n, toplevel string, wave int, now time.Time) (topic string, payload []byte, gen uint64, err error) {
	if r.signed != nil {
		return r.presigned(n)
	}
	v, _ := r.c.fleet.Get(n)
	gen = nextGen(now, max(v.DesiredGen, r.tr.gens[n]))
	topic, payload, err = r.signGen(n, toplevel, wave, gen, now)
	return topic, payload, gen, err
}

// signGen builds, signs and encodes the Desired of node n with gen.
func (r *run) signGen(n, toplevel string, wave int, gen uint64, now time.Time) (topic string, payload []byte, err error) {
	if r.signed != nil {
		topic, payload, _, err = r.presigned(n)
		return topic, payload, err
	}
	p := r.plan
	d := &proto.Desired{Node: n, Rollout: p.ID, Gen: gen, Toplevel: toplevel,
		Action: p.Action, Reboot: p.Reboot, Wave: wave, Checks: p.Checks, Timeouts: p.Timeouts}
	d.Stamp(r.c.from, now)
	if r.opts.Key != nil {
		if err := proto.Sign(d, *r.opts.Key); err != nil {
			return "", nil, fmt.Errorf("sign desired for %s: %w", n, err)
		}
	}
	b, err := proto.Seal(d)
	if err != nil {
		return "", nil, fmt.Errorf("desired for %s: %w", n, err)
	}
	return r.c.topics.NodeDesired(n), b, nil
}

// openWave opens wave i: the gates of the gated groups move to i+1, and
// the ungated targets of the wave get their Desired.
func (r *run) openWave(ctx context.Context, i int) error {
	if err := r.publishGates(ctx, i+1, proto.GateRunning); err != nil {
		return err
	}
	wave := r.tr.waves[i]
	if err := r.publishDesired(ctx, func(n string) bool {
		return len(r.tr.waves) > 1 && !r.gated[n] && slices.Contains(wave, n)
	}); err != nil {
		return err
	}
	r.tr.open(i, r.opts.Clock())
	r.log.Debug("wave opened", "wave", i+1, "of", len(r.tr.waves), "nodes", wave)
	if r.opts.OnWave != nil {
		r.opts.OnWave(WaveEvent{Index: i, Total: len(r.tr.waves), Nodes: wave})
	}
	if err := r.save(); err != nil {
		return err
	}
	return r.c.publishState(ctx, r.tr, false)
}

func (r *run) publishGates(ctx context.Context, openWave int, state proto.GateState) error {
	for _, g := range r.gates {
		seq := uint64(r.opts.Clock().UnixMilli())
		if seq <= r.seq {
			seq = r.seq + 1
		}
		r.seq = seq
		gt := &proto.Gate{Group: g, Rollout: r.plan.ID, OpenWave: openWave, State: state, Seq: seq}
		gt.Stamp(r.c.from, r.opts.Clock())
		if k := r.gateKey(); k != nil {
			if err := proto.Sign(gt, *k); err != nil {
				return fmt.Errorf("sign gate for %s: %w", g, err)
			}
		}
		b, err := proto.Seal(gt)
		if err != nil {
			return fmt.Errorf("gate for %s: %w", g, err)
		}
		if err := r.c.bus.Publish(ctx, r.c.topics.GroupGate(g), b, true); err != nil {
			return fmt.Errorf("publish gate for %s: %w", g, err)
		}
	}
	return nil
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
		now := r.opts.Clock()
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

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// After a reconnect, reassert runs once no message arrived for
// reassertQuiet since the reconnect was noticed (the retained flood is
// over, or there was none), or reassertWait passed.
const (
	reassertQuiet = 300 * time.Millisecond
	reassertWait  = 10 * time.Second
)

// reassert publishes again, after a reconnect, the part of the rollout
// that the broker no longer holds: a broker restarted on an empty or older
// store (a new host, a restored backup, a crash in the moment between
// acknowledging and storing) would otherwise leave the targets that had
// not yet taken their Desired waiting for it forever. A Desired the broker
// sent again since the connection was lost (lost), one cleared since, and
// one superseded by a newer rollout are left alone; the rest go out again
// with the same gen, which a node that already has it ignores. The gates
// and the rollout's state are published again too.
func (r *run) reassert(ctx context.Context, lost time.Time) error {
	var missing []string
	if !r.tr.halted {
		for n, gen := range r.tr.gens {
			v, _ := r.c.fleet.Get(n)
			resent := v.DesiredSeen.After(lost) && (v.DesiredLast == gen || v.DesiredLast == 0)
			if v.DesiredGen > gen || resent {
				continue
			}
			missing = append(missing, n)
		}
	}
	slices.Sort(missing)
	now := r.opts.Clock()
	for _, n := range missing {
		wave := 0
		if r.gated[n] {
			wave = r.tr.wave[n] + 1
		}
		topic, b, err := r.signGen(n, r.plan.Targets[n], wave, r.tr.gens[n], now)
		if err != nil {
			return err
		}
		if err := r.c.bus.Publish(ctx, topic, b, true); err != nil {
			return fmt.Errorf("publish desired for %s again: %w", n, err)
		}
	}
	if len(missing) > 0 {
		r.log.Info("the broker had lost the desired state of some targets: published again", "targets", len(missing), "first", missing[:min(len(missing), 10)])
	}
	if r.tr.opened > 0 {
		state := proto.GateRunning
		if r.tr.halted {
			state = proto.GateCancelled
		}
		if err := r.publishGates(ctx, r.tr.opened, state); err != nil {
			return err
		}
	}
	return r.c.publishState(ctx, r.tr, false)
}

// resyncQuiet is how long a follower waits without any message before it
// reads the retained state again.
const resyncQuiet = 10 * time.Second

// needResync reports whether the follower has heard nothing for
// resyncQuiet, and has not resynchronised in that time either.
func needResync(lastMessage, lastResync, now time.Time) bool {
	return now.Sub(lastMessage) >= resyncQuiet && now.Sub(lastResync) >= resyncQuiet
}

// halt stops the rollout: no further wave opens, and the gates say
// cancelled, so that gated targets of later waves report cancelled instead
// of waiting forever. Targets already running finish (or roll back).
func (r *run) halt(ctx context.Context, reason string) error {
	r.tr.halt(reason)
	r.log.Debug("rollout halted", "reason", reason)
	if r.opts.OnWave != nil {
		r.opts.OnWave(WaveEvent{Index: r.tr.opened - 1, Total: len(r.tr.waves), Halted: true, Reason: reason})
	}
	if err := r.publishGates(ctx, r.tr.opened, proto.GateCancelled); err != nil {
		return err
	}
	return r.clearUnstarted(ctx)
}

// clearUnstarted clears the retained Desired of every target that has not
// started this rollout, so that one offline now finds nothing when it
// wakes. A node that already took it (queued) is told by its gate.
func (r *run) clearUnstarted(ctx context.Context) error {
	for _, n := range r.tr.list() {
		v, _ := r.c.fleet.Get(n.Node)
		started := v.Status != nil && v.Status.Execution.Rollout == r.plan.ID && v.Status.Execution.State != proto.StateQueued
		if n.State == "" && !started && v.DesiredGen == r.tr.gens[n.Node] && v.DesiredGen != 0 {
			if err := r.c.bus.Publish(ctx, r.c.topics.NodeDesired(n.Node), nil, true); err != nil {
				return fmt.Errorf("clear desired of %s: %w", n.Node, err)
			}
		}
	}
	return nil
}

// cancelledBy starts the reason of a cancelled rollout.
const cancelledBy = "cancelled by "

// cancelledElsewhere reports whether the rollout was ended by someone
// else (labctl rollout cancel), and by whom: its retained state says it is
// over while this run still follows it, or one of its gates was cancelled.
func (r *run) cancelledElsewhere() (string, bool) {
	if rs, ok := r.c.fleet.Rollout(r.plan.ID); ok && rs.State.Terminal() && rs.CreatedAt == r.tr.created.UnixMilli() {
		return rs.From, true
	}
	for _, g := range r.gates {
		gt, ok := r.c.fleet.Gate(g)
		if ok && gt.Rollout == r.plan.ID && gt.State == proto.GateCancelled && gt.Seq > r.seq {
			return gt.From, true
		}
	}
	return "", false
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

// rollbackSwitched sends every target that succeeded back to the system it
// ran before, as a rollout of its own (<id>-rollback, one wave).
func (r *run) rollbackSwitched(ctx context.Context) (*Result, error) {
	if r.signed != nil {
		return r.rollbackSigned(ctx)
	}
	back := Plan{ID: rollbackID(r.plan.ID), Targets: map[string]string{}, Action: r.plan.Action, Reboot: r.plan.Reboot,
		MaxFailures: Size{Percent: 100}, WaveDeadline: r.plan.WaveDeadline}
	for _, n := range r.tr.list() {
		if n.State != proto.StateSucceeded {
			continue
		}
		v, _ := r.c.fleet.Get(n.Node)
		if v.Status == nil || proto.ValidStorePath(v.Status.Previous) != nil {
			r.log.Warn("cannot roll back: no previous system recorded", "node", n.Node)
			continue
		}
		back.Targets[n.Node] = v.Status.Previous
	}
	if len(back.Targets) == 0 {
		return nil, nil
	}
	r.log.Info("rolling back the targets that switched", "rollout", back.ID, "targets", len(back.Targets))
	opts := r.opts
	opts.OnWave = nil
	for i := 2; ; i++ {
		res, err := r.c.Run(ctx, back, opts)
		if !errors.Is(err, ErrRolloutExists) || i > 9 {
			return res, err
		}
		back.ID = rollbackID(r.plan.ID + "-" + strconv.Itoa(i)) // <id>-2-rollback: the id is taken
	}
}

func rollbackID(id string) string {
	const suffix = "-rollback"
	if len(id)+len(suffix) > 63 {
		id = id[:63-len(suffix)]
	}
	return id + suffix
}

// Cancel stops a rollout that may be followed by another labctl or by
// nobody: its gates say cancelled (queued targets report cancelled), a
// cancel command reaches the targets online that have not started, the
// retained Desired of every target that never started is cleared (so an
// offline one finds nothing when it wakes), and the retained state and
// the record say cancelled. Targets already activating finish or roll
// back: a node refuses a cancel once its profile may have moved.
func (c *Controller) Cancel(ctx context.Context, rec *Record, opts Options) error {
	r, err := c.fromRecord(rec, opts)
	if err != nil {
		return err
	}
	plan, opts := r.plan, r.opts
	r.tr.opened, r.tr.openedAt = rec.Opened, rec.OpenedAt
	if err := r.publishGates(ctx, rec.Opened, proto.GateCancelled); err != nil {
		return err
	}
	now := opts.Clock()
	cmd := &proto.Command{Op: proto.OpCancel, Rollout: plan.ID, Expires: now.Add(time.Hour).UnixMilli()}
	cmd.Stamp(c.from, now)
	if k := r.gateKey(); k != nil {
		if err := proto.Sign(cmd, *k); err != nil {
			return fmt.Errorf("sign cancel: %w", err)
		}
	}
	b, err := proto.Seal(cmd)
	if err != nil {
		return err
	}
	if err := c.bus.Publish(ctx, c.topics.AllCmd(), b, false); err != nil {
		return fmt.Errorf("publish cancel: %w", err)
	}
	r.tr.update(c.fleet, nil)
	if err := r.clearUnstarted(ctx); err != nil {
		return err
	}
	r.tr.cancelled = true
	r.tr.halt(cancelledBy + c.from)
	if err := c.publishState(ctx, r.tr, true); err != nil {
		return err
	}
	return r.saveDone(true)
}

// publishState publishes the retained RolloutState.
func (c *Controller) publishState(ctx context.Context, tr *tracker, done bool) error {
	s := tr.state(done)
	s.Stamp(c.from, time.Now())
	b, err := sealRolloutState(s)
	if err != nil {
		return fmt.Errorf("rollout state: %w", err)
	}
	return c.bus.Publish(ctx, c.topics.Rollout(tr.plan.ID), b, true)
}

// sealRolloutState seals s; when it is over the size limit (a rollout of
// many thousand targets) it leaves targets out of Nodes, least
// interesting first — succeeded, then the rest that are not in trouble —
// and counts them in Omitted.
func sealRolloutState(s *proto.RolloutState) ([]byte, error) {
	b, err := proto.Seal(s)
	if !errors.Is(err, proto.ErrTooLarge) {
		return b, err
	}
	trouble := func(p proto.NodeProgress) bool {
		switch p.State {
		case proto.StateFailed, proto.StateRolledBack, proto.StateRollbackFailed, proto.StateTimedOut, proto.StateRejected:
			return true
		}
		return false
	}
	for _, drop := range []func(proto.NodeProgress) bool{
		func(p proto.NodeProgress) bool {
			return p.State == proto.StateSucceeded || p.State == proto.StateAlreadyCurrent
		},
		func(p proto.NodeProgress) bool { return !trouble(p) },
		func(proto.NodeProgress) bool { return true },
	} {
		for n, p := range s.Nodes {
			if drop(p) {
				delete(s.Nodes, n)
				s.Omitted++
			}
		}
		if b, err = proto.Seal(s); !errors.Is(err, proto.ErrTooLarge) {
			return b, err
		}
	}
	// Waves alone are too large: say so rather than publish nothing.
	s.Waves = nil
	return proto.Seal(s)
}
