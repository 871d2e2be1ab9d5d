package homeassistant

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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
	Retry  time.Duration
	Logger *slog.Logger
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
		sent: map[string][]byte{}, topicsOf: map[string][]string{}, switched: map[string]time.Time{}}, nil
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
