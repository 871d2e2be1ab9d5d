// Package nixsystest provides Fake, an in-memory nixsys.System for tests of
// the node: no Nix, no processes, and each step finishes when the test says.
//
// A step whose channel is nil finishes at once and succeeds. A step whose
// channel is set blocks until the test sends its outcome (or the call's
// context ends), so the test decides when and how each step finishes:
//
//	f := nixsystest.New()
//	f.Realised = make(chan error)
//	f.Activated = make(chan nixsys.Result)
//	go node.Run(...)                      // the node calls f.Realise(...) and blocks
//	f.Realised <- nil                     // fetching succeeds
//	f.Activated <- nixsys.Result{ExitCode: 1, OutputTail: "boom"} // the switch fails
//
// Calls() lists what was called, in order, for assertions.
package nixsystest

import (
	"context"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/lab-fleet/lab/node/nixsys"
)

// Fake implements nixsys.System in memory. Set its fields before use;
// its methods are safe for concurrent use.
type Fake struct {
	// Realised, if not nil, makes Realise block until it receives the
	// error to return.
	Realised chan error
	// ProfileSet, if not nil, makes SetProfile block until it receives
	// the error to return; on nil the profile moves.
	ProfileSet chan error
	// Activated, if not nil, makes Activation.Wait block until it receives
	// the activation's result (Toplevel, Action and times are filled in
	// when zero). Nil: every activation succeeds at once.
	Activated chan nixsys.Result
	// StartErr, if not nil, is returned by every StartActivation.
	StartErr error
	// CheckErr, if not nil, is returned by every CheckActivation.
	CheckErr error

	mu      sync.Mutex
	files   map[string][]byte // by toplevel + "/" + name: SetSystemFile
	calls   []string
	gens    []nixsys.Generation
	booted  string
	running map[string]*activation // by runDir
}

var _ nixsys.System = (*Fake)(nil)

// New returns a Fake with no profile, whose steps all succeed at once.
func New() *Fake { return &Fake{} }

// activation is the fake's side of an Activation.
type activation struct {
	*nixsys.Activation
	done chan struct{} // closed once the result is known
	res  nixsys.Result
}

// Calls returns the calls so far: "realise <p>", "set-profile <p>",
// "check <action> <p>", "activate <action> <p>", "resume <runDir>".
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// SetCurrent adds a profile generation for p, as if the machine had been
// installed with it, without recording a call.
func (f *Fake) SetCurrent(p string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addGeneration(p)
}

// SetBooted sets what Booted returns.
func (f *Fake) SetBooted(p string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.booted = p
}

func (f *Fake) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

// step waits for the outcome of a blocking step.
func step(ctx context.Context, ch chan error) error {
	if ch == nil {
		return nil
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Realise records the call, validates p, and waits for Realised.
func (f *Fake) Realise(ctx context.Context, p string) error {
	f.record("realise %s", p)
	if err := nixsys.ValidStorePath(p); err != nil {
		return fmt.Errorf("realise: %w", err)
	}
	if err := step(ctx, f.Realised); err != nil {
		return fmt.Errorf("realise %s: %w", p, err)
	}
	return nil
}

// SetProfile records the call, validates p, waits for ProfileSet and then
// adds a generation.
func (f *Fake) SetProfile(ctx context.Context, p string) error {
	f.record("set-profile %s", p)
	if err := nixsys.ValidStorePath(p); err != nil {
		return fmt.Errorf("set profile: %w", err)
	}
	if err := step(ctx, f.ProfileSet); err != nil {
		return fmt.Errorf("set profile %s: %w", p, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addGeneration(p)
	return nil
}

func (f *Fake) addGeneration(p string) {
	num := 1
	for i := range f.gens {
		f.gens[i].Current = false
		num = f.gens[i].Number + 1
	}
	f.gens = append(f.gens, nixsys.Generation{Number: num, Toplevel: p, Current: true,
		Link: fmt.Sprintf("/nix/var/nix/profiles/system-%d-link", num)})
}

// Current returns the newest generation's toplevel, "" if none.
func (f *Fake) Current() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.gens) == 0 {
		return "", nil
	}
	return f.gens[len(f.gens)-1].Toplevel, nil
}

// Booted returns what SetBooted set.
func (f *Fake) Booted() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.booted, nil
}

// Generations returns the generations, oldest first.
func (f *Fake) Generations() ([]nixsys.Generation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]nixsys.Generation(nil), f.gens...), nil
}

// CheckActivation records the call, validates like the real one and
// returns CheckErr.
func (f *Fake) CheckActivation(toplevel, action, runDir string) error {
	f.record("check %s %s", action, toplevel)
	if err := validate(toplevel, action); err != nil {
		return &nixsys.ActivationError{Phase: "check", Toplevel: toplevel, Action: action, Err: err}
	}
	if f.CheckErr != nil {
		return &nixsys.ActivationError{Phase: "check", Toplevel: toplevel, Action: action, Err: f.CheckErr}
	}
	return nil
}

func validate(toplevel, action string) error {
	switch action {
	case "switch", "boot", "test", "dry-activate":
	default:
		return nixsys.ErrInvalidAction
	}
	return nixsys.ValidStorePath(toplevel)
}

// StartActivation records the call, validates like the real one, and
// returns an Activation whose Wait takes its result from Activated.
func (f *Fake) StartActivation(ctx context.Context, toplevel, action, runDir string) (*nixsys.Activation, error) {
	f.record("activate %s %s", action, toplevel)
	if err := validate(toplevel, action); err != nil {
		return nil, &nixsys.ActivationError{Phase: "start", Toplevel: toplevel, Action: action, Err: err}
	}
	if f.StartErr != nil {
		return nil, &nixsys.ActivationError{Phase: "start", Toplevel: toplevel, Action: action, Err: f.StartErr}
	}
	a := &activation{done: make(chan struct{})}
	a.Activation = nixsys.NewActivation(toplevel, action, a.waiter(f.Activated))
	a.RunDir = runDir
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running == nil {
		f.running = map[string]*activation{}
	}
	f.running[runDir] = a
	return a.Activation, nil
}

// waiter returns the Wait function of a.
func (a *activation) waiter(results chan nixsys.Result) func(context.Context) (nixsys.Result, error) {
	var once sync.Once
	finish := func(res nixsys.Result) {
		once.Do(func() {
			if res.Toplevel == "" {
				res.Toplevel, res.Action = a.Toplevel, a.Action
			}
			if res.Started.IsZero() {
				res.Started = a.Started
			}
			if res.Finished.IsZero() {
				res.Finished = time.Now()
			}
			a.res = res
			close(a.done)
		})
	}
	return func(ctx context.Context) (nixsys.Result, error) {
		if results == nil {
			finish(nixsys.Result{})
		}
		select {
		case <-a.done:
		case res := <-results:
			finish(res)
		case <-ctx.Done():
			return nixsys.Result{}, &nixsys.ActivationError{Phase: "wait", Toplevel: a.Toplevel, Action: a.Action,
				Err: fmt.Errorf("no result yet: %w", ctx.Err())}
		}
		<-a.done
		return a.res, nil
	}
}

// ResumeActivation returns the last activation started with runDir, as a
// restarted labd would find it; its result is kept across Waits.
func (f *Fake) ResumeActivation(runDir string) (*nixsys.Activation, bool, error) {
	f.record("resume %s", runDir)
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.running[runDir]
	if !ok {
		return nil, false, nil
	}
	return a.Activation, true, nil
}

// SetSystemFile makes SystemFile(toplevel, name) return content, as if
// the realised toplevel held that file.
func (f *Fake) SetSystemFile(toplevel, name string, content []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.files == nil {
		f.files = map[string][]byte{}
	}
	f.files[toplevel+"/"+name] = append([]byte(nil), content...)
}

// SystemFile returns what SetSystemFile set, or an error wrapping
// fs.ErrNotExist. It records no call.
func (f *Fake) SystemFile(toplevel, name string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.files[toplevel+"/"+name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: toplevel + "/" + name, Err: fs.ErrNotExist}
	}
	return append([]byte(nil), b...), nil
}
