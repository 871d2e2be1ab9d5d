package homeassistant

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
)

// Fleet is what the publisher reads: *controller.Fleet.
type Fleet interface {
	Snapshot() []controller.NodeView
	Watch() (<-chan struct{}, func())
}

// Bus publishes; controller.Bus (the service's connection) is one.
type Bus interface {
	Publish(ctx context.Context, topic string, payload []byte, retain bool) error
}

// Config configures a Publisher. Fleet, Bus and Topics are required.
type Config struct {
	Fleet  Fleet
	Bus    Bus
	Topics proto.Topics // lab's layout: the state topics go under its prefix
	// Prefix is Home Assistant's discovery prefix ("" = DefaultPrefix).
	Prefix string
	// BirthTopic is where Home Assistant says "online" ("" =
	// DefaultBirthTopic); the caller delivers its messages to
	// HandleBirth.
	BirthTopic string
	// Interval is the shortest time between two passes over the fleet (0
	// = 1s): a rollout changes the view many times a second.
	Interval time.Duration
	// Retry is how long after a failed publish the pass is tried again
	// (0 = 10s).
	Retry time.Duration
	// SweepAfter is how long after the start the machines an earlier run
	// announced (retained states on RetainedFilter, given to
	// HandleRetained) but the view does not hold are removed (0 = 15s):
	// the retained messages of the fleet have arrived by then.
	SweepAfter time.Duration
	Logger     *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.BirthTopic == "" {
		c.BirthTopic = DefaultBirthTopic
	}
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.Retry == 0 {
		c.Retry = 10 * time.Second
	}
	if c.SweepAfter == 0 {
		c.SweepAfter = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks a configuration (after defaults).
func (c Config) Validate() error {
	var errs []error
	if c.Fleet == nil || c.Bus == nil {
		errs = append(errs, errors.New("homeassistant: a fleet view and a bus are required"))
	}
	if c.Topics.Prefix() == "" {
		errs = append(errs, errors.New("homeassistant: lab's topic layout is required"))
	}
	if err := ValidPrefix(c.Prefix); err != nil {
		errs = append(errs, err)
	}
	if c.BirthTopic == "" || strings.ContainsAny(c.BirthTopic, "+#\x00") {
		errs = append(errs, fmt.Errorf("homeassistant: birth topic %q: a topic name, no wildcards", c.BirthTopic))
	}
	return errors.Join(errs...)
}

// ErrPrefix is the error of an invalid discovery prefix.
var ErrPrefix = errors.New("invalid discovery prefix")

// ValidPrefix checks a discovery prefix: one or more topic levels, none
// empty, no wildcards, not starting with '$'.
func ValidPrefix(p string) error {
	if p == "" || strings.ContainsAny(p, "+#\x00") || strings.HasPrefix(p, "$") ||
		strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//") {
		return fmt.Errorf("%w %q: no wildcards, '$', empty levels or leading/trailing '/'", ErrPrefix, p)
	}
	return nil
}

// Publisher keeps Home Assistant's view of the fleet: discovery configs
// and a JSON state per machine. Run owns its state.
type Publisher struct {
	cfg   Config
	l     layout
	birth chan struct{} // coalesced: Home Assistant said online

	mu        sync.Mutex
	announced map[string]bool // machines with a retained state on the broker (HandleRetained)

	// Owned by Run.
	sent     map[string][]byte    // topic → the retained payload last published
	topicsOf map[string][]string  // machine → its topics still to clear when it goes
	switched map[string]time.Time // machine → the latest switch seen (switchedAt never goes back)
}

// New returns a publisher; Run starts it.
func New(cfg Config) (*Publisher, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Publisher{cfg: cfg, l: layout{discovery: cfg.Prefix, topics: cfg.Topics}, birth: make(chan struct{}, 1),
		announced: map[string]bool{}, sent: map[string][]byte{}, topicsOf: map[string][]string{}, switched: map[string]time.Time{}}, nil
}

// BirthTopic is the topic whose messages go to HandleBirth.
func (p *Publisher) BirthTopic() string { return p.cfg.BirthTopic }

// HandleBirth takes a message of the birth topic: "online" makes Run
// publish every config and state again. It does not block.
func (p *Publisher) HandleBirth(topic string, payload []byte) {
	if topic != p.cfg.BirthTopic || string(payload) != "online" {
		return
	}
	select {
	case p.birth <- struct{}{}:
	default:
	}
}

// RetainedFilter is the filter of the JSON states, whose messages (the
// retained ones of an earlier run above all) go to HandleRetained.
func (p *Publisher) RetainedFilter() string { return p.l.stateTopic("+") }

// HandleRetained takes a message of RetainedFilter: it learns which
// machines the broker holds a state of, so that the sweep after the start
// removes those that left while no publisher ran. It does not block.
func (p *Publisher) HandleRetained(topic string, payload []byte) {
	rest, ok := strings.CutPrefix(topic, p.cfg.Topics.Prefix()+"/ha/")
	name, ok2 := strings.CutSuffix(rest, "/state")
	if !ok || !ok2 || proto.ValidID(name) != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(payload) == 0 {
		delete(p.announced, name)
	} else {
		p.announced[name] = true
	}
}

// sweep makes the machines announced on the broker but absent from the
// view and unknown to this run ones to remove: the next sync clears them.
// An empty view sweeps nothing (a view that never filled, e.g. for want
// of access, must not empty Home Assistant).
func (p *Publisher) sweep() {
	views := p.cfg.Fleet.Snapshot()
	if len(views) == 0 {
		return
	}
	present := map[string]bool{}
	for _, v := range views {
		present[v.Name] = true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for name := range p.announced {
		if _, known := p.topicsOf[name]; known || present[name] {
			continue
		}
		var topics []string
		for _, m := range p.l.configs(controller.NodeView{Name: name}) {
			topics = append(topics, m.topic)
		}
		p.topicsOf[name] = append(topics, p.l.stateTopic(name))
		p.cfg.Logger.Info("home assistant: a machine announced earlier is no longer in the fleet view", "node", name)
	}
}

// Run publishes until ctx ends: at start, after changes of the fleet view
// (at most every Interval), everything again when Home Assistant comes
// online, and again after Retry when a publish failed.
func (p *Publisher) Run(ctx context.Context) error {
	changed, stop := p.cfg.Fleet.Watch()
	defer stop()
	log := p.cfg.Logger
	log.Info("home assistant discovery", "prefix", p.cfg.Prefix, "birth_topic", p.cfg.BirthTopic,
		"state_topics", p.l.stateTopic("+"))
	var retry <-chan time.Time
	sweep := time.After(p.cfg.SweepAfter)
	force := false
	for {
		ok := p.sync(ctx, force)
		if ctx.Err() != nil {
			return nil
		}
		retry, force = nil, false
		if !ok {
			retry = time.After(p.cfg.Retry)
		}
		// One pass per Interval at most; a birth waits for it too.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(p.cfg.Interval):
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-p.birth:
			log.Info("home assistant came online: publishing every discovery config again")
			force = true
		case <-retry:
		case <-sweep:
			sweep = nil
			p.sweep()
		}
		select { // a birth that came with a change
		case <-p.birth:
			force = true
		default:
		}
	}
}

// sync publishes what changed since the last pass (everything when
// force), and clears the topics of machines that left the view. It
// reports whether every publish succeeded.
func (p *Publisher) sync(ctx context.Context, force bool) bool {
	views := p.cfg.Fleet.Snapshot()
	rows := render.StatusRows(views)
	ok := true
	present := make(map[string]bool, len(views))
	for i, v := range views {
		present[v.Name] = true
		if t := switchedAt(v.Status); t.After(p.switched[v.Name]) {
			p.switched[v.Name] = t
		}
		msgs := p.l.configs(v)
		b, err := json.Marshal(stateOf(v, rows[i], p.switched[v.Name]))
		if err != nil {
			panic(err) // strings only
		}
		msgs = append(msgs, message{p.l.stateTopic(v.Name), b})
		if _, known := p.topicsOf[v.Name]; !known {
			p.cfg.Logger.Info("home assistant: announcing a machine", "node", v.Name)
		}
		topics := make([]string, 0, len(msgs))
		for _, m := range msgs {
			ok = p.publish(ctx, m, force) && ok
			topics = append(topics, m.topic)
		}
		p.topicsOf[v.Name] = topics
	}
	for name, topics := range p.topicsOf {
		if present[name] {
			continue
		}
		// Empty retained payloads: Home Assistant removes the entities
		// (configs first), and the broker forgets the state.
		var left []string
		for _, t := range topics {
			if !p.publish(ctx, message{topic: t}, false) {
				left = append(left, t)
			}
		}
		if len(left) > 0 {
			ok = false
			p.topicsOf[name] = left
			continue
		}
		delete(p.topicsOf, name)
		delete(p.switched, name)
		p.cfg.Logger.Info("home assistant: removed a machine that left the fleet view", "node", name)
	}
	return ok
}

// publish publishes m retained unless it is what was published last (or
// force). A failed publish is forgotten, so that the next pass retries.
func (p *Publisher) publish(ctx context.Context, m message, force bool) bool {
	last, had := p.sent[m.topic]
	if !force && had && bytes.Equal(last, m.payload) {
		return true
	}
	if err := p.cfg.Bus.Publish(ctx, m.topic, m.payload, true); err != nil {
		delete(p.sent, m.topic)
		if ctx.Err() == nil {
			p.cfg.Logger.Warn("home assistant: publish failed, retrying later", "topic", m.topic, "err", err)
		}
		return false
	}
	if len(m.payload) == 0 {
		delete(p.sent, m.topic)
	} else {
		p.sent[m.topic] = m.payload
	}
	p.cfg.Logger.Debug("home assistant: published", "topic", m.topic, "bytes", len(m.payload))
	return true
}
