package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/proto"
)

// answers routes the controller service's responses (on this client's
// <p>/ctl/res/<self>/#) to the requests waiting for them, by Correlation
// Data.
type answers struct {
	filter, prefix string

	mu         sync.Mutex
	subscribed bool
	waiting    map[string]chan []byte
}

func newAnswers(filter string) *answers {
	return &answers{filter: filter, prefix: strings.TrimSuffix(filter, "#"), waiting: map[string]chan []byte{}}
}

// deliver takes m if it is a response; it reports whether it was.
func (a *answers) deliver(m bus.Message) bool {
	if !strings.HasPrefix(m.Topic, a.prefix) {
		return false
	}
	a.mu.Lock()
	ch := a.waiting[string(m.Correlation)]
	delete(a.waiting, string(m.Correlation))
	a.mu.Unlock()
	if ch != nil {
		ch <- m.Payload // buffered: one answer per request
	}
	return true
}

// Waits for the controller service's answer: how long an info request
// (the first of a command, to find the service) may take, and every other.
const (
	findControllerWait = 5 * time.Second
	requestWait        = 2 * time.Minute // a submission of 10,000 targets is checked and published before the answer
)

// errNoController says that no controller service answered.
type errNoController struct {
	topic  string
	reason string
}

func (e errNoController) Error() string {
	return fmt.Sprintf("no controller service answered on %s (%s): run `labctl broker` (it runs the controller beside the embedded broker) "+
		"or `labctl controller --broker URL` beside an external broker; or drive the rollout from this terminal with --local-controller", e.topic, e.reason)
}

// ctlError is a refusal or failure the controller answered with.
type ctlError struct {
	verb string
	resp *controller.Response
}

func (e ctlError) Error() string {
	what := "refused"
	switch e.resp.Code {
	case controller.CodeNotFound:
		if e.verb == controller.VerbForget {
			return fmt.Sprintf("the controller does not know it: %s", e.resp.Error)
		}
		return fmt.Sprintf("the controller does not know it: %s (`labctl rollout list` shows what it knows)", e.resp.Error)
	case controller.CodeInternal:
		what = "failed"
	case controller.CodeBadRequest:
		what = "could not read the request"
	}
	return fmt.Sprintf("the controller %s (%s): %s", what, e.verb, e.resp.Error)
}

// ExitCode: a request the controller refuses or cannot read is the
// caller's to fix (2); its own failure is 1.
func (e ctlError) ExitCode() int {
	switch e.resp.Code {
	case controller.CodeRefused, controller.CodeNotFound, controller.CodeBadRequest:
		return exitUsage
	}
	return exitError
}

// request asks the controller service (verb on <p>/ctl/req/<verb>) and
// waits up to wait for its answer. A refusal is a ctlError; silence, or a
// broker that says nobody listens, is errNoController.
func (c *connection) request(ctx context.Context, verb string, req *controller.Request, wait time.Duration) (*controller.Response, error) {
	a := c.answers
	a.mu.Lock()
	subscribed := a.subscribed
	a.mu.Unlock()
	if !subscribed {
		if err := c.bus.Subscribe(ctx, a.filter); err != nil {
			return nil, fmt.Errorf("read the controller's answers on %s: %w (a controller identity may read its own answers; docs/security.md)", a.filter, err)
		}
		a.mu.Lock()
		a.subscribed = true
		a.mu.Unlock()
	}
	if req.From == "" {
		req.From = c.self
	}
	body, err := controller.EncodeRequest(req)
	if err != nil {
		return nil, err
	}
	corr := proto.NewID()
	ch := make(chan []byte, 1)
	a.mu.Lock()
	a.waiting[corr] = ch
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.waiting, corr)
		a.mu.Unlock()
	}()
	topic := c.topics.CtlRequest(verb)
	err = c.bus.PublishMessage(ctx, bus.Message{Topic: topic, Payload: body,
		ResponseTopic: c.topics.CtlResponse(c.self, corr), Correlation: []byte(corr)})
	switch {
	case errors.Is(err, bus.ErrNoSubscribers):
		return nil, errNoController{topic: topic, reason: "the broker says nothing subscribes to it"}
	case errors.Is(err, bus.ErrNotAuthorized):
		return nil, refusalError{err: err, msg: fmt.Sprintf("the broker refused the request on %s (0x87, not authorized): "+
			"asking the controller service needs a controller identity: labctl node add NAME --role controller --identities FILE on the broker, "+
			"then --username NAME --password-file NAME.password (docs/security.md)", topic)}
	case err != nil:
		return nil, err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case b := <-ch:
		resp, err := controller.DecodeResponse(b)
		if err != nil {
			return nil, fmt.Errorf("the controller's answer to %s: %w", verb, err)
		}
		if resp.Code != controller.CodeOK {
			return nil, ctlError{verb: verb, resp: resp}
		}
		return resp, nil
	case <-t.C:
		return nil, errNoController{topic: topic, reason: fmt.Sprintf("no answer within %s", wait)}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// controllerInfo finds the controller service: its name and key.
func (c *connection) controllerInfo(ctx context.Context) (*controller.Info, error) {
	resp, err := c.request(ctx, controller.VerbInfo, &controller.Request{}, findControllerWait)
	if err != nil {
		return nil, err
	}
	if resp.Info == nil {
		return nil, errors.New("the controller's answer to info carries no info")
	}
	return resp.Info, nil
}
