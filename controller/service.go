package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/lab-fleet/lab/internal/clock"
	"github.com/lab-fleet/lab/proto"
)

// Responder answers a request: it publishes payload to the request's
// Response Topic with its Correlation Data (MQTT v5).
type Responder interface {
	Respond(ctx context.Context, topic string, correlation, payload []byte) error
}

// RequestMessage is one request as it arrived.
type RequestMessage struct {
	Topic         string
	Payload       []byte
	ResponseTopic string
	Correlation   []byte
	// Username is the requester's identity as the broker authenticated
	// it, where the connection tells (the embedded broker's inline
	// client); empty otherwise.
	Username string
}

// ServiceStore is where the service keeps its rollouts.
type ServiceStore interface {
	Store
	Get(id string) (*Record, error)
	List() ([]*Record, error)
}

// ServiceConfig configures a controller service.
type ServiceConfig struct {
	Bus       Bus
	Responder Responder
	Fleet     *Fleet
	Topics    proto.Topics
	Name      string // the service's name in envelopes (its client id); it recognises its own rollouts by it
	Store     ServiceStore
	Key       proto.PrivateKey // signs gates and commands
	// Trusted are the operator keys whose Desired states a submission may
	// carry; empty accepts any (the nodes' trusted_keys still decide).
	Trusted proto.Keyring
	Logger  *slog.Logger
	Clock   clock.Clock // its rollouts', schedules' and jobs' time (default the system clock)
	// Workers bounds the requests handled at once (default 8); Queue
	// bounds the requests waiting (default 256; more are answered busy).
	Workers, Queue int
}

// Service is the long-running controller (DESIGN §2, §11): it accepts
// rollouts submitted over MQTT request/response, drives each on its own
// goroutine to its end, keeps them in its store, and resumes the running
// ones when it starts again.
type Service struct {
	cfg  ServiceConfig
	ctl  *Controller
	log  *slog.Logger
	reqs chan RequestMessage

	upMu    sync.Mutex
	uploads map[string]*upload // submissions arriving in parts, by upload id

	mu      sync.Mutex
	ctx     context.Context // Run's; nil before
	runs    map[string]*active
	wg      sync.WaitGroup
	stopped bool
}

// upload is a submission arriving in parts.
type upload struct {
	parts   [][]byte
	got     int
	size    int
	started time.Time
}

// Uploads in parts: how long one may take, and how much all of them may
// hold at once.
const (
	uploadExpiry   = 2 * time.Minute
	uploadMaxBytes = 4 * MaxRequestSize
)

// active is a rollout the service drives.
type active struct {
	cancel  context.CancelFunc
	done    chan struct{}
	started *Started // nil for reboot jobs
}

// NewService checks cfg and returns a service; Run starts it.
func NewService(cfg ServiceConfig) (*Service, error) {
	switch {
	case cfg.Bus == nil || cfg.Responder == nil || cfg.Fleet == nil:
		return nil, errors.New("controller service: bus, responder and fleet are required")
	case cfg.Store == nil:
		return nil, errors.New("controller service: a store is required")
	case cfg.Key.Key == nil:
		return nil, errors.New("controller service: its own key is required (it signs gates and commands)")
	case cfg.Name == "":
		return nil, errors.New("controller service: a name is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Clock = clock.Or(cfg.Clock)
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 256
	}
	return &Service{cfg: cfg, ctl: New(cfg.Bus, cfg.Fleet, cfg.Topics, cfg.Name), log: cfg.Logger.With("component", "controller"),
		reqs: make(chan RequestMessage, cfg.Queue), runs: map[string]*active{}, uploads: map[string]*upload{}}, nil
}

// Filters are the subscriptions the service needs besides the fleet
// view's: its requests.
func (s *Service) Filters() []string { return []string{s.cfg.Topics.CtlRequests()} }

// HandleRequest queues one request; it never blocks (a full queue is
// answered busy), so the connection's goroutine may call it.
func (s *Service) HandleRequest(m RequestMessage) {
	select {
	case s.reqs <- m:
	default:
		s.log.Warn("request queue full: answering busy", "topic", m.Topic)
		go s.respond(context.Background(), m, &Response{Code: CodeInternal, Error: "the controller is busy: try again"})
	}
}

// Run resumes the rollouts its store says are running, halts the ones it
// drove that its store lost (a new host), then serves requests until ctx
// ends. It returns once every rollout goroutine stopped (their records
// say running: the next start resumes them).
func (s *Service) Run(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	s.interruptJobs()
	if err := s.recover(ctx); err != nil {
		s.log.Error("recovering rollouts", "err", err)
	}
	var workers sync.WaitGroup
	for range s.cfg.Workers {
		workers.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case m := <-s.reqs:
					s.serve(ctx, m)
				}
			}
		})
	}
	<-ctx.Done()
	workers.Wait()
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// recover resumes every recorded rollout that is still running, and
// halts the running rollouts the retained state says this service drove
// but its store does not hold.
func (s *Service) recover(ctx context.Context) error {
	recs, err := s.cfg.Store.List()
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, rec := range recs {
		known[rec.Plan.ID] = true
		if rec.State != proto.RolloutRunning {
			continue
		}
		full, err := s.cfg.Store.Get(rec.Plan.ID)
		if err != nil {
			s.log.Error("cannot resume rollout", "rollout", rec.Plan.ID, "err", err)
			continue
		}
		s.log.Info("resuming rollout", "rollout", rec.Plan.ID, "wave", rec.Opened, "of", len(rec.Waves))
		st, err := s.ctl.Restart(ctx, full, s.options())
		if err != nil {
			s.log.Error("cannot resume rollout", "rollout", rec.Plan.ID, "err", err)
			continue
		}
		s.drive(full.Plan.ID, st, st.Follow)
	}
	for _, rs := range s.cfg.Fleet.Rollouts() {
		if known[rs.Rollout] || rs.State.Terminal() || rs.From != s.cfg.Name {
			continue
		}
		if err := s.orphan(ctx, rs); err != nil {
			s.log.Error("halting a rollout this controller lost", "rollout", rs.Rollout, "err", err)
		}
	}
	return nil
}

// orphanReason is what a rollout says when its controller lost its record.
const orphanReason = "halted: the controller driving it lost its records (a new host, or its data directory was lost); " +
	"targets already activating finish, the others do not start (the Desired states they had not started were cleared); " +
	"publish the rollout again to finish it"

// orphan halts a rollout this service drove and no longer knows: it
// cannot open the next waves (it has neither the plan nor the signed
// Desired states), so it clears the retained Desired of every target that
// has not started it (one asleep finds nothing when it wakes), tells the
// targets online to cancel (heard where they pin this service's key: a
// new host's new key is not, and a target waiting for its wave keeps
// waiting until a new rollout replaces it), and says why in the
// rollout's retained state.
func (s *Service) orphan(ctx context.Context, rs proto.RolloutState) error {
	now := s.cfg.Clock.Now()
	cleared := 0
	for _, wave := range rs.Waves {
		for _, node := range wave {
			v, ok := s.cfg.Fleet.Get(node)
			if !ok || v.DesiredRollout != rs.Rollout {
				continue
			}
			if v.Started(rs.Rollout) {
				continue // it finishes (or rolls back) on its own
			}
			if err := s.cfg.Bus.Publish(ctx, s.cfg.Topics.NodeDesired(node), nil, true); err != nil {
				return fmt.Errorf("clear desired of %s: %w", node, err)
			}
			cleared++
		}
	}
	if err := publishCancel(ctx, s.cfg.Bus, s.cfg.Topics, rs.Rollout, s.cfg.Name, &s.cfg.Key, now); err != nil {
		return err
	}
	rs.State, rs.Halted, rs.Reason = proto.RolloutCancelled, true, orphanReason
	rs.Stamp(s.cfg.Name, now)
	st, err := sealRolloutState(&rs)
	if err != nil {
		return err
	}
	s.log.Warn("a running rollout of this controller is not in its store: halted", "rollout", rs.Rollout, "desired_cleared", cleared)
	return s.cfg.Bus.Publish(ctx, s.cfg.Topics.Rollout(rs.Rollout), st, true)
}

func (s *Service) options() Options {
	k := s.cfg.Key
	return Options{GateKey: &k, Store: s.cfg.Store, Logger: s.cfg.Logger, Clock: s.cfg.Clock}
}

// drive runs fn on its own goroutine as the owner of rollout id.
func (s *Service) drive(id string, st *Started, fn func(context.Context) (*Result, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.ctx == nil {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	a := &active{cancel: cancel, done: make(chan struct{}), started: st}
	s.runs[id] = a
	s.wg.Go(func() {
		defer close(a.done)
		defer cancel()
		res, err := fn(ctx)
		s.mu.Lock()
		if s.runs[id] == a {
			delete(s.runs, id)
		}
		s.mu.Unlock()
		switch {
		case err != nil && ctx.Err() != nil:
			s.log.Info("stopped following rollout (its record says running: it resumes at the next start)", "rollout", id)
		case err != nil:
			s.log.Error("rollout stopped", "rollout", id, "err", err)
		case res != nil:
			s.log.Info("rollout ended", "rollout", id, "outcome", res.Outcome, "reason", res.Reason)
		}
	})
}

// stop ends the goroutine driving id, if any, and waits for it.
func (s *Service) stop(id string) {
	s.mu.Lock()
	a := s.runs[id]
	s.mu.Unlock()
	if a != nil {
		a.cancel()
		<-a.done
	}
}

// Running lists the rollouts the service drives now.
func (s *Service) Running() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.runs))
}

func (s *Service) serve(ctx context.Context, m RequestMessage) {
	if m.ResponseTopic == "" {
		s.log.Warn("request without a response topic: ignored (an MQTT v5 client sets Response Topic and Correlation Data)", "topic", m.Topic)
		return
	}
	r, err := s.cfg.Topics.Parse(m.Topic)
	if err != nil || r.Kind != proto.TopicCtlRequest {
		s.respond(ctx, m, &Response{Code: CodeBadRequest, Error: fmt.Sprintf("%s is not a request topic", m.Topic)})
		return
	}
	req, err := DecodeRequest(m.Payload)
	if err != nil {
		s.respond(ctx, m, &Response{Code: CodeBadRequest, Error: err.Error()})
		return
	}
	who := m.Username
	if who == "" {
		who = req.From
	}
	s.log.Debug("request", "verb", r.ID, "from", who, "rollout", req.Rollout)
	s.respond(ctx, m, s.answer(ctx, r.ID, req, who))
}

// Ask answers a request as if it came over MQTT from who (the
// dashboard's reads and buttons); the caller decides who may ask what.
func (s *Service) Ask(ctx context.Context, verb string, req *Request, who string) *Response {
	if req == nil {
		req = &Request{}
	}
	return s.answer(ctx, verb, req, who)
}

// answer handles one decoded request.
func (s *Service) answer(ctx context.Context, verb string, req *Request, who string) *Response {
	fail := func(err error) *Response {
		switch {
		case errors.Is(err, ErrNoRollout):
			return &Response{Code: CodeNotFound, Error: err.Error()}
		case errors.Is(err, ErrRefused), errors.Is(err, ErrInvalidPlan), errors.Is(err, ErrRolloutExists),
			errors.Is(err, ErrRolloutEnded), errors.Is(err, ErrKeyNeeded):
			return &Response{Code: CodeRefused, Error: err.Error()}
		}
		return &Response{Code: CodeInternal, Error: err.Error()}
	}
	needID := func() *Response {
		if err := proto.ValidID(req.Rollout); err != nil {
			return &Response{Code: CodeBadRequest, Error: fmt.Sprintf("rollout id %q: %v", req.Rollout, err)}
		}
		return nil
	}
	switch verb {
	case VerbForget:
		if err := proto.ValidID(req.Node); err != nil {
			return &Response{Code: CodeBadRequest, Error: fmt.Sprintf("machine name %q: %v", req.Node, err)}
		}
		if err := s.forget(ctx, req.Node, who); errors.Is(err, ErrNoMachine) {
			return &Response{Code: CodeNotFound, Error: err.Error()}
		} else if err != nil {
			return fail(err)
		}
		return &Response{Code: CodeOK}
	case VerbInfo:
		return &Response{Code: CodeOK, Info: &Info{Name: s.cfg.Name, Key: s.cfg.Key.Public().String(),
			TrustedKeys: slices.Sorted(maps.Keys(s.cfg.Trusted)), Running: s.Running(), TimeZone: ZoneName()}}
	case VerbSubmit:
		if req.Parts > 0 {
			sub, done, err := s.part(req)
			switch {
			case err != nil:
				return &Response{Code: CodeBadRequest, Error: err.Error()}
			case !done:
				return &Response{Code: CodeOK, Rollout: req.Rollout}
			}
			req.Submission = sub
		}
		if req.Submission == nil {
			return &Response{Code: CodeBadRequest, Error: "submit without a submission"}
		}
		if err := s.gateTrust(req.Submission); err != nil {
			return fail(err)
		}
		started, err := s.ctl.Start(ctx, req.Submission, s.cfg.Trusted, who, s.options())
		if err != nil {
			return fail(err)
		}
		s.drive(started.ID(), started, started.Follow)
		return &Response{Code: CodeOK, Rollout: started.ID()}
	case VerbList:
		recs, err := s.cfg.Store.List()
		if err != nil {
			return fail(err)
		}
		for _, r := range recs {
			if r.Result != nil {
				r.Result.Nodes = nil // the list says how far, show says who
				r.Result.Rollback = nil
			}
		}
		return &Response{Code: CodeOK, Records: recs}
	case VerbShow:
		if bad := needID(); bad != nil {
			return bad
		}
		rec, err := s.cfg.Store.Get(req.Rollout)
		if err != nil {
			return fail(err)
		}
		return &Response{Code: CodeOK, Rollout: rec.Plan.ID, Record: rec}
	case VerbCancel:
		if bad := needID(); bad != nil {
			return bad
		}
		s.stop(req.Rollout) // its goroutine saved the record as it stopped
		rec, err := s.cfg.Store.Get(req.Rollout)
		if err != nil {
			return fail(err)
		}
		opts := s.options()
		opts.By = who
		if err := s.ctl.Cancel(ctx, rec, opts); err != nil {
			return fail(err)
		}
		s.log.Info("rollout cancelled", "rollout", req.Rollout, "by", who)
		rec, err = s.cfg.Store.Get(req.Rollout)
		if err != nil {
			return fail(err)
		}
		return &Response{Code: CodeOK, Rollout: rec.Plan.ID, Record: rec}
	case VerbResume:
		if bad := needID(); bad != nil {
			return bad
		}
		if a := s.active(req.Rollout); a != nil {
			rec, err := s.cfg.Store.Get(req.Rollout)
			if err != nil {
				return fail(err)
			}
			if rec.Paused == "" {
				return &Response{Code: CodeRefused, Error: fmt.Sprintf("rollout %s is running and not paused: the controller drives it already", req.Rollout)}
			}
			if err := a.started.Unpause(ctx, who); err != nil {
				return fail(err)
			}
			return s.showResponse(req.Rollout)
		}
		rec, err := s.cfg.Store.Get(req.Rollout)
		if err != nil {
			return fail(err)
		}
		if err := rec.CanContinue(true); err != nil {
			return fail(err)
		}
		rec.Paused = "" // resuming a stopped rollout also ends a pause
		st, err := s.ctl.Restart(ctx, rec, s.options())
		if err != nil {
			return fail(err)
		}
		s.drive(rec.Plan.ID, st, st.Follow)
		return &Response{Code: CodeOK, Rollout: rec.Plan.ID, Record: rec}
	case VerbPause:
		if bad := needID(); bad != nil {
			return bad
		}
		a := s.active(req.Rollout)
		if a == nil || a.started == nil {
			if _, err := s.cfg.Store.Get(req.Rollout); err != nil {
				return fail(err)
			}
			return &Response{Code: CodeRefused, Error: fmt.Sprintf("rollout %s is not running here: nothing to pause", req.Rollout)}
		}
		if err := a.started.Pause(ctx, who); err != nil {
			return fail(err)
		}
		return s.showResponse(req.Rollout)
	case VerbReboot:
		if req.Reboot == nil {
			return &Response{Code: CodeBadRequest, Error: "reboot without a job"}
		}
		rec, err := s.startJob(*req.Reboot, who)
		if err != nil {
			return fail(err)
		}
		return &Response{Code: CodeOK, Rollout: rec.Job.ID, Job: rec}
	case VerbJob:
		if bad := needID(); bad != nil {
			return bad
		}
		js, ok := s.cfg.Store.(JobStore)
		if !ok {
			return &Response{Code: CodeNotFound, Error: "this controller keeps no reboot jobs"}
		}
		rec, err := js.Job(req.Rollout)
		if err != nil {
			return fail(err)
		}
		return &Response{Code: CodeOK, Rollout: rec.Job.ID, Job: rec}
	}
	return &Response{Code: CodeBadRequest, Error: fmt.Sprintf("unknown verb %q: this controller answers %v", verb, Verbs)}
}

// part keeps one part of an upload; with the last it returns the whole
// submission.
func (s *Service) part(req *Request) (*Submission, bool, error) {
	if req.Parts > MaxRequestSize/1024 || req.Part < 0 || req.Part >= req.Parts || proto.ValidID(req.Upload) != nil {
		return nil, false, fmt.Errorf("%w: part %d of %d of upload %q", ErrBadRequest, req.Part, req.Parts, req.Upload)
	}
	s.upMu.Lock()
	defer s.upMu.Unlock()
	total := 0
	for id, u := range s.uploads {
		if s.cfg.Clock.Now().Sub(u.started) > uploadExpiry {
			delete(s.uploads, id)
			continue
		}
		total += u.size
	}
	u := s.uploads[req.Upload]
	if req.Part == 0 {
		u = &upload{parts: make([][]byte, req.Parts), started: s.cfg.Clock.Now()}
		s.uploads[req.Upload] = u
	}
	switch {
	case u == nil:
		return nil, false, fmt.Errorf("%w: part %d of upload %q, which has not started or took longer than %s", ErrBadRequest, req.Part, req.Upload, uploadExpiry)
	case len(u.parts) != req.Parts || u.parts[req.Part] != nil:
		return nil, false, fmt.Errorf("%w: part %d of %d of upload %q does not fit what arrived before", ErrBadRequest, req.Part, req.Parts, req.Upload)
	case total+len(req.Chunk) > uploadMaxBytes || u.size+len(req.Chunk) > MaxRequestSize:
		delete(s.uploads, req.Upload)
		return nil, false, fmt.Errorf("%w: upload %q is too large", ErrBadRequest, req.Upload)
	}
	u.parts[req.Part] = req.Chunk
	u.got++
	u.size += len(req.Chunk)
	if u.got < len(u.parts) {
		return nil, false, nil
	}
	delete(s.uploads, req.Upload)
	sub := new(Submission)
	if err := decode(bytes.Join(u.parts, nil), sub); err != nil {
		return nil, false, fmt.Errorf("%w: upload %q: %w", ErrBadRequest, req.Upload, err)
	}
	return sub, true, nil
}

// active returns the goroutine driving id, if any.
func (s *Service) active(id string) *active {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs[id]
}

// showResponse answers with the rollout's record.
func (s *Service) showResponse(id string) *Response {
	rec, err := s.cfg.Store.Get(id)
	if err != nil {
		return &Response{Code: CodeInternal, Error: err.Error()}
	}
	return &Response{Code: CodeOK, Rollout: id, Record: rec}
}

// gateTrust refuses a rollout whose gated targets say (in their status)
// that they would not accept the gates this service signs: they would
// wait for their wave forever.
func (s *Service) gateTrust(sub *Submission) error {
	if len(sub.Gates) == 0 {
		return nil
	}
	var refusing []string
	for _, n := range sub.Gated {
		v, _ := s.cfg.Fleet.Get(n)
		if v.Status == nil {
			continue
		}
		if ok, known := v.Status.AcceptsGateKey(s.cfg.Key.ID); known && !ok {
			refusing = append(refusing, n)
		}
	}
	if len(refusing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s would not accept this controller's gates (they do not pin its key %q): add %s to their controller_keys (NixOS: services.labd.controllerKeys), or publish with --local-controller",
		ErrRefused, list(refusing), s.cfg.Key.ID, s.cfg.Key.Public().String())
}

func list(names []string) string {
	if len(names) <= 5 {
		return fmt.Sprint(names)
	}
	return fmt.Sprintf("%v and %d more", names[:5], len(names)-5)
}

func (s *Service) respond(ctx context.Context, m RequestMessage, r *Response) {
	b, err := EncodeResponse(r)
	if err != nil {
		s.log.Error("encode response", "err", err)
		return
	}
	if r.Code != CodeOK {
		s.log.Info("request refused", "topic", m.Topic, "code", r.Code, "reason", r.Error)
	}
	if ctx.Err() != nil {
		ctx = context.Background() // answer even while stopping
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.cfg.Responder.Respond(ctx, m.ResponseTopic, m.Correlation, b); err != nil {
		s.log.Warn("answer a request", "topic", m.ResponseTopic, "err", err)
	}
}

// ErrNoMachine: no machine of that name has reported.
var ErrNoMachine = errors.New("no such machine")

// forget clears what the broker retains of a machine that is gone: its
// desired state, the secrets it reported, its status and presence (the
// JSON mirror follows). Every view
// of the fleet then drops it. A machine that is online, or that a running
// rollout drives, is refused: it would come back with its next status.
func (s *Service) forget(ctx context.Context, node, who string) error {
	v, ok := s.cfg.Fleet.Get(node)
	if !ok || (v.Status == nil && !v.Seen) {
		return fmt.Errorf("%w: %s (labctl status lists the machines)", ErrNoMachine, node)
	}
	if v.Online {
		return fmt.Errorf("%w: %s is online: stop labd on it first (its next status would bring it back), then forget it", ErrRefused, node)
	}
	for _, rs := range s.cfg.Fleet.Rollouts() {
		if _, in := rs.Nodes[node]; in && !rs.State.Terminal() {
			return fmt.Errorf("%w: rollout %s (%s) has %s as a target: cancel it first (labctl rollout cancel %s)", ErrRefused, rs.Rollout, rs.State, node, rs.Rollout)
		}
	}
	t := s.cfg.Topics
	topics := []string{t.NodeDesired(node)}
	if v.Status != nil {
		for _, sec := range v.Status.Secrets { // its secrets, as it reported them: ciphertext nobody else can use
			if proto.ValidID(sec.Name) == nil {
				topics = append(topics, t.NodeSecret(node, sec.Name))
			}
		}
	}
	// Status and presence last: once they are gone the machine leaves the view.
	topics = append(topics, t.NodeStatus(node), t.NodePresence(node))
	for _, topic := range topics {
		if err := s.cfg.Bus.Publish(ctx, topic, nil, true); err != nil {
			return fmt.Errorf("clear %s: %w (on an external broker the controller identity may not write a node's status and presence: clear them as the broker's administrator, e.g. mosquitto_pub -r -n -t %s)", topic, err, topic)
		}
	}
	s.log.Info("machine forgotten", "node", node, "by", who)
	return nil
}
