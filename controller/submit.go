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

// Submission is a rollout handed to a controller service (DESIGN §11):
// the plan, its waves and gates as the submitter planned them from its
// view of the fleet, and every target's Desired state sealed and signed
// with the operator's key. The service never signs a Desired: it checks
// these, keeps them, and publishes them as they are.
type Submission struct {
	Plan  Plan       `json:"plan"`
	Waves [][]string `json:"waves"`
	Gates []string   `json:"gates,omitempty"` // groups whose gates open the gated targets
	Gated []string   `json:"gated,omitempty"`
	// Desired is each target's sealed, signed Desired state.
	Desired map[string][]byte `json:"desired"`
	// Rollback is, with --on-failure rollback, each target's way back:
	// a Desired of the system it runs now (rollout <id>-rollback, the
	// next gen), published only if the rollout halts after it switched.
	Rollback map[string][]byte `json:"rollback,omitempty"`
}

// ErrRefused wraps every reason a controller service refuses a
// submission or a request; nothing is published for a refused one.
var ErrRefused = errors.New("refused")

// Prepare plans a rollout as Run would (planning metadata from the
// targets' retained status, waves, gates) and signs every target's
// Desired with key (nil: unsigned), for submission to a controller
// service. A rollout that rolls back on failure also gets each target's
// way back signed: the system the target runs now. Groups are dropped: a
// machine that joins a targeted group later has no signed Desired, so a
// submitted rollout does not adopt it.
func (c *Controller) Prepare(plan Plan, key *proto.PrivateKey, now time.Time) (*Submission, error) {
	plan.Machines = c.machines(plan)
	plan.Groups = nil
	if err := plan.Validate(); err != nil {
		return nil, err
	}
	waves, err := plan.Waves()
	if err != nil {
		return nil, err
	}
	r := c.newRun(newRolloutState(plan, waves, now), Options{Key: key, Clock: clock.NewFake(now)})
	c.chooseGates(r.st)
	sub := &Submission{Plan: plan, Waves: waves, Gates: r.st.gates, Desired: make(map[string][]byte, len(plan.Targets))}
	for n := range r.st.gated {
		sub.Gated = append(sub.Gated, n)
	}
	slices.Sort(sub.Gated)
	for i, wave := range waves {
		for _, n := range wave {
			w := 0
			if r.st.gated[n] {
				w = i + 1
			}
			_, b, gen, err := r.signOne(n, plan.Targets[n], w, now)
			if err != nil {
				return nil, err
			}
			sub.Desired[n] = b
			if plan.OnFailure != OnFailureRollback {
				continue
			}
			v, _ := c.fleet.Get(n)
			if v.Status == nil || proto.ValidStorePath(v.Status.Current) != nil || v.Status.Current == plan.Targets[n] {
				continue // nothing known to go back to, or nothing changes
			}
			back := &proto.Desired{Node: n, Rollout: rollbackID(plan.ID), Gen: gen + 1, Toplevel: v.Status.Current,
				Action: plan.Action, Reboot: plan.Reboot}
			back.Stamp(c.from, now)
			if key != nil {
				if err := proto.Sign(back, *key); err != nil {
					return nil, fmt.Errorf("sign the way back for %s: %w", n, err)
				}
			}
			if sub.Rollback == nil {
				sub.Rollback = map[string][]byte{}
			}
			if sub.Rollback[n], err = proto.Seal(back); err != nil {
				return nil, fmt.Errorf("the way back for %s: %w", n, err)
			}
		}
	}
	return sub, nil
}

// maxSubmittedTargets bounds a submission (the request's size is bounded
// by the broker's packet size too).
const maxSubmittedTargets = 100_000

// check validates a submission against the operator keys the service
// trusts (none: any signature or none; the nodes check their own pins)
// and returns the record it starts from. Every Desired must be exactly
// what the plan says for its node, in the wave the submitter planned.
func (s *Submission) check(trusted proto.Keyring, now time.Time) (*Record, error) {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
	}
	plan := s.Plan
	if len(plan.Groups) > 0 {
		return nil, refuse("plan names groups to adopt new members into: a controller service cannot sign for them (submit the members as targets)")
	}
	if len(plan.Targets) > maxSubmittedTargets {
		return nil, refuse("%d targets: at most %d in one rollout", len(plan.Targets), maxSubmittedTargets)
	}
	plan.Targets = maps.Clone(plan.Targets)
	if err := plan.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	wave := map[string]int{}
	for i, w := range s.Waves {
		if len(w) == 0 {
			return nil, refuse("wave %d is empty", i+1)
		}
		for _, n := range w {
			if _, ok := plan.Targets[n]; !ok {
				return nil, refuse("wave %d names %q, which is not a target", i+1, n)
			}
			if _, dup := wave[n]; dup {
				return nil, refuse("%s is in two waves", n)
			}
			wave[n] = i
		}
	}
	if len(wave) != len(plan.Targets) {
		return nil, refuse("the waves hold %d of the %d targets", len(wave), len(plan.Targets))
	}
	for _, g := range s.Gates {
		if err := proto.ValidID(g); err != nil {
			return nil, refuse("gate %q: %v", g, err)
		}
	}
	gated := map[string]bool{}
	for _, n := range s.Gated {
		if _, ok := plan.Targets[n]; !ok {
			return nil, refuse("gated %q is not a target", n)
		}
		gated[n] = true
	}
	if len(gated) > 0 && len(s.Gates) == 0 {
		return nil, refuse("gated targets but no gates")
	}
	if len(s.Desired) != len(plan.Targets) {
		return nil, refuse("%d signed desired states for %d targets", len(s.Desired), len(plan.Targets))
	}
	rec := &Record{Plan: plan, Waves: s.Waves, Gates: s.Gates, Gated: s.Gated, Gens: map[string]uint64{},
		Created: now, Updated: now, State: proto.RolloutRunning, Signed: s.Desired, Rollback: s.Rollback}
	keyID, first := "", true
	verify := func(what string, d *proto.Desired) error {
		if len(trusted) > 0 {
			if err := trusted.Verify(d); err != nil {
				return refuse("%s: %v (the controller trusts operator keys %s)", what, err, slices.Sorted(maps.Keys(trusted)))
			}
		}
		if first {
			keyID, first = d.KeyID, false
		} else if d.KeyID != keyID {
			return refuse("%s: signed with key %q, the others with %q: sign a rollout with one key", what, d.KeyID, keyID)
		}
		if proto.Expired(d.Expires, now) {
			return refuse("%s: expired", what)
		}
		return nil
	}
	for _, n := range plan.Nodes() {
		d, err := openDesired(s.Desired[n])
		if err != nil {
			return nil, refuse("desired state of %s: %v", n, err)
		}
		want := 0
		if gated[n] {
			want = wave[n] + 1
		}
		switch {
		case d.Node != n:
			return nil, refuse("the desired state given for %s is for %q", n, d.Node)
		case d.Rollout != plan.ID:
			return nil, refuse("desired state of %s: rollout %q, not %q", n, d.Rollout, plan.ID)
		case d.Toplevel != plan.Targets[n]:
			return nil, refuse("desired state of %s: system %s, but the plan says %s", n, d.Toplevel, plan.Targets[n])
		case d.Action != plan.Action || d.Reboot != plan.Reboot || !slices.Equal(d.Checks, plan.Checks) || d.Timeouts != plan.Timeouts:
			return nil, refuse("desired state of %s: action, reboot, checks or timeouts differ from the plan's", n)
		case d.Wave != want:
			return nil, refuse("desired state of %s: wave %d, but the plan opens it with %d", n, d.Wave, want)
		}
		if err := verify("desired state of "+n, d); err != nil {
			return nil, err
		}
		rec.Gens[n] = d.Gen
	}
	for n, b := range s.Rollback {
		d, err := openDesired(b)
		if err != nil {
			return nil, refuse("way back of %s: %v", n, err)
		}
		switch {
		case d.Node != n:
			return nil, refuse("the way back given for %s is for %q", n, d.Node)
		case rec.Gens[n] == 0:
			return nil, refuse("way back of %s, which is not a target", n)
		case d.Rollout != rollbackID(plan.ID):
			return nil, refuse("way back of %s: rollout %q, not %q", n, d.Rollout, rollbackID(plan.ID))
		case d.Gen <= rec.Gens[n]:
			return nil, refuse("way back of %s: gen %d is not after the rollout's %d", n, d.Gen, rec.Gens[n])
		case d.Wave != 0:
			return nil, refuse("way back of %s: wave %d (a way back acts at once)", n, d.Wave)
		}
		if err := verify("way back of "+n, d); err != nil {
			return nil, err
		}
	}
	rec.KeyID = keyID
	// Gens are recorded once published (Resume publishes what is missing).
	rec.Gens = map[string]uint64{}
	return rec, nil
}

// openDesired decodes and validates a sealed Desired.
func openDesired(b []byte) (*proto.Desired, error) {
	d := new(proto.Desired)
	if err := proto.Decode(b, d); err != nil {
		return nil, err
	}
	return d, nil
}

// presigned returns the Desired the operator signed for n, and its gen.
func (r *run) presigned(n string) (topic string, payload []byte, gen uint64, err error) {
	b, ok := r.st.signed[n]
	if !ok {
		return "", nil, 0, fmt.Errorf("no signed desired state for %s", n)
	}
	d, err := openDesired(b)
	if err != nil {
		return "", nil, 0, fmt.Errorf("signed desired state of %s: %w", n, err)
	}
	return r.c.topics.NodeDesired(n), b, d.Gen, nil
}

// rollbackSigned sends every target that succeeded back to the system it
// ran before, with the way back the operator signed at submission: a
// rollout of its own (<id>-rollback, one wave). A target whose previous
// system is not the one signed (it changed meanwhile) is left alone.
func (r *run) rollbackSigned(ctx context.Context) (*Result, error) {
	back := Plan{ID: rollbackID(r.st.plan.ID), Targets: map[string]string{}, Action: r.st.plan.Action, Reboot: r.st.plan.Reboot,
		MaxFailures: Size{Percent: 100}, WaveDeadline: r.st.plan.WaveDeadline}
	signed := map[string][]byte{}
	for _, n := range r.st.list() {
		if n.State != proto.StateSucceeded {
			continue
		}
		b, ok := r.st.rollback[n.Node]
		if !ok {
			r.log.Warn("cannot roll back: no way back was signed for it", "node", n.Node)
			continue
		}
		d, err := openDesired(b)
		if err != nil {
			return nil, fmt.Errorf("way back of %s: %w", n.Node, err)
		}
		if v, _ := r.c.fleet.Get(n.Node); v.Status != nil && v.Status.Previous != d.Toplevel {
			r.log.Warn("cannot roll back: the system it ran before is not the one the way back names", "node", n.Node, "previous", v.Status.Previous, "signed", d.Toplevel)
			continue
		}
		back.Targets[n.Node] = d.Toplevel
		signed[n.Node] = b
	}
	if len(back.Targets) == 0 {
		return nil, nil
	}
	r.log.Info("rolling back the targets that switched", "rollout", back.ID, "targets", len(back.Targets))
	opts := r.opts
	opts.OnWave = nil
	if err := back.Validate(); err != nil {
		return nil, err
	}
	waves, _ := back.Waves()
	st := newRolloutState(back, waves, opts.Clock.Now())
	st.keyID, st.submitter, st.signed = r.st.keyID, r.st.submitter, signed
	rb := r.c.newRun(st, opts)
	if err := rb.begin(ctx); err != nil {
		return nil, err
	}
	return rb.follow(ctx)
}

// Started is a submitted rollout that a controller service accepted: its
// record is saved and its first wave published (or resumed: Restart).
// Follow drives it on the goroutine that owns it; Pause and Unpause send
// it requests.
type Started struct{ r *run }

// Pause asks the goroutine driving the rollout to open no further wave
// (the wave in progress finishes); by is recorded.
func (s *Started) Pause(ctx context.Context, by string) error { return s.send(ctx, factPause{by}) }

// Unpause lets a paused rollout open its next wave again.
func (s *Started) Unpause(ctx context.Context, by string) error { return s.send(ctx, factResume{by}) }

// send gives f to the goroutine driving the rollout and waits until it
// was acted on.
func (s *Started) send(ctx context.Context, f fact) error {
	req := request{f: f, done: make(chan struct{})}
	select {
	case s.r.facts <- req:
	case <-ctx.Done():
		return fmt.Errorf("rollout %s: %w", s.r.st.plan.ID, ctx.Err())
	}
	select {
	case <-req.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("rollout %s: %w", s.r.st.plan.ID, ctx.Err())
	}
}

// ID is the rollout's id.
func (s *Started) ID() string { return s.r.st.plan.ID }

// Follow drives the rollout to its end (waves, deadlines, thresholds,
// halts, the way back), as Run does after publishing.
func (s *Started) Follow(ctx context.Context) (*Result, error) { return s.r.follow(ctx) }

// Start accepts a submission (DESIGN §11): it checks every signed Desired
// against trusted (empty: any), refuses an id used before (in opts.Store
// or on the broker), saves the record and publishes the first wave. The
// Desired states are published as the operator signed them; gates and
// commands are signed with opts.GateKey. submitter is recorded.
func (c *Controller) Start(ctx context.Context, sub *Submission, trusted proto.Keyring, submitter string, opts Options) (*Started, error) {
	opts.Clock = clock.Or(opts.Clock)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	rec, err := sub.check(trusted, opts.Clock.Now())
	if err != nil {
		return nil, err
	}
	if rs, ok := c.fleet.Rollout(rec.Plan.ID); ok {
		return nil, fieldErr(FieldRolloutID, "%w: %w: %q is on the broker already (%s, created %s): choose another %s", ErrRefused,
			ErrRolloutExists, rec.Plan.ID, rs.State, time.UnixMilli(rs.CreatedAt).UTC().Format(time.RFC3339), FieldRolloutID)
	}
	plan := rec.Plan
	st := newRolloutState(plan, rec.Waves, rec.Created)
	st.gates, st.keyID, st.submitter, st.signed, st.rollback = rec.Gates, rec.KeyID, submitter, rec.Signed, rec.Rollback
	for _, n := range rec.Gated {
		st.gated[n] = true
	}
	r := c.newRun(st, opts)
	r.facts = make(chan request)
	if err := r.begin(ctx); err != nil {
		return nil, err
	}
	r.log.Info("rollout accepted", "submitter", submitter, "targets", len(plan.Targets), "waves", len(rec.Waves), "key", rec.KeyID)
	return &Started{r: r}, nil
}
