package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/proto"
)

// phases watches a submitted rollout on the wire, as a third party
// subscribed to the requests, the answers and the Desired states (the
// bench's brokers let anyone read anything): when labctl's requests and
// the service's answers passed, and when the service published the first
// and the last Desired of the rollout. It tells where publish --detach
// spends its time.
type phases struct {
	rollout string

	mu                      sync.Mutex
	retained                int // Desired states received on subscribing (the fleet's current ones)
	info, firstReq, lastReq time.Time
	parts                   int
	lastRes                 time.Time
	firstDesired, lastDes   time.Time
	desired                 int
}

// watchPhases subscribes a new client to url's requests, answers and
// Desired states and waits until the retained Desired of n nodes arrived
// (or 10 s passed), so that what follows is the rollout's.
func watchPhases(url, rollout string, n int) (*phases, *bus.Client, error) {
	tp := proto.DefaultTopics
	p := &phases{rollout: rollout}
	c, err := bus.Dial(context.Background(), login(bus.Config{URLs: []string{url}, ClientID: "bench-phases", CleanStart: true,
		OnMessage: func(m bus.Message) { p.handle(tp, m) }}))
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.AwaitConnection(ctx); err != nil {
		c.Close(context.Background())
		return nil, nil, err
	}
	answers := tp.Prefix() + "/ctl/res/#"
	if auth != nil { // a controller identity reads its own answers only
		answers = tp.Prefix() + "/ctl/res/" + authUser + "/#"
	}
	if err := c.Subscribe(ctx, tp.AllDesired(), tp.CtlRequests(), answers); err != nil {
		c.Close(context.Background())
		return nil, nil, err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		p.mu.Lock()
		got := p.retained
		p.mu.Unlock()
		if got >= n {
			break
		}
	}
	return p, c, nil
}

func (p *phases) handle(tp proto.Topics, m bus.Message) {
	now := time.Now()
	r, err := tp.Parse(m.Topic)
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch r.Kind {
	case proto.TopicDesired:
		if m.Retain && p.firstReq.IsZero() {
			p.retained++
			return
		}
		var d proto.Desired
		if proto.Decode(m.Payload, &d) != nil || d.Rollout != p.rollout {
			return
		}
		if p.desired == 0 {
			p.firstDesired = now
		}
		p.desired++
		p.lastDes = now
	case proto.TopicCtlRequest:
		switch r.ID {
		case "info":
			if p.info.IsZero() {
				p.info = now
			}
		case "submit":
			if p.firstReq.IsZero() {
				p.firstReq = now
			}
			p.lastReq = now
			p.parts++
		}
	case proto.TopicCtlResponse:
		if !p.firstReq.IsZero() {
			p.lastRes = now
		}
	}
}

// String is the timeline since t0 (publish started) and returned (publish
// --detach returned, since t0).
func (p *phases) summary(t0 time.Time, returned time.Duration) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	at := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return dur(t.Sub(t0))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "info request at %s, submission in %d part(s) %s → %s, first Desired published %s, last (%d) %s, last answer %s, publish returned %s",
		at(p.info), p.parts, at(p.firstReq), at(p.lastReq), at(p.firstDesired), p.desired, at(p.lastDes), at(p.lastRes), dur(returned))
	return b.String()
}
