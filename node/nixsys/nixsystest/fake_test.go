package nixsystest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/lab-fleet/lab/node/nixsys"
)

const (
	gen1 = "/nix/store/bkliyaj65zfdd9pvdm83747bp7fyb740-nixos-system-node1-1"
	gen2 = "/nix/store/qvvhyivfhxyqzvyzsd9xyzvqfc5p6abd-nixos-system-node1-2"
)

func TestFakeSucceedsAtOnce(t *testing.T) {
	f := New()
	f.SetCurrent(gen1)
	ctx := context.Background()
	if err := f.Realise(ctx, gen2); err != nil {
		t.Fatal(err)
	}
	if err := f.SetProfile(ctx, gen2); err != nil {
		t.Fatal(err)
	}
	a, err := f.StartActivation(ctx, gen2, "switch", "/run/x")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := a.Wait(ctx); err != nil || !res.OK() || res.Toplevel != gen2 {
		t.Fatalf("Wait = %+v, %v", res, err)
	}
	gens, _ := f.Generations()
	cur, _ := f.Current()
	if len(gens) != 2 || !gens[1].Current || gens[0].Current || cur != gen2 {
		t.Errorf("generations %+v, current %s", gens, cur)
	}
	want := []string{"realise " + gen2, "set-profile " + gen2, "activate switch " + gen2}
	if !slices.Equal(f.Calls(), want) {
		t.Errorf("Calls = %q, want %q", f.Calls(), want)
	}
	if _, err := f.StartActivation(ctx, gen2, "reboot", "/run/x"); !errors.Is(err, nixsys.ErrInvalidAction) {
		t.Errorf("bad action: %v", err)
	}
	if err := f.Realise(ctx, "/tmp/x"); err == nil {
		t.Error("Realise(non-store path) succeeded")
	}
}

func TestFakeStepsBlockUntilTold(t *testing.T) {
	f := New()
	f.Realised = make(chan error)
	f.Activated = make(chan nixsys.Result)
	errc := make(chan error)
	go func() { errc <- f.Realise(context.Background(), gen2) }()
	boom := errors.New("boom")
	f.Realised <- boom
	if err := <-errc; !errors.Is(err, boom) {
		t.Fatalf("Realise = %v, want boom", err)
	}
	// A Realise whose context ends returns without a value.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := f.Realise(ctx, gen2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Realise = %v", err)
	}

	a, err := f.StartActivation(context.Background(), gen2, "test", "/run/x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Wait(ctx); err == nil {
		t.Fatal("Wait returned before the test sent a result")
	}
	go func() { f.Activated <- nixsys.Result{ExitCode: 1, OutputTail: "baked failure"} }()
	res, err := a.Wait(context.Background())
	if err != nil || res.OK() || res.Action != "test" {
		t.Fatalf("Wait = %+v, %v", res, err)
	}
	// A restarted node finds the same activation and its result.
	b, ok, err := f.ResumeActivation("/run/x")
	if !ok || err != nil {
		t.Fatalf("Resume = %v, %v", ok, err)
	}
	if res2, err := b.Wait(context.Background()); err != nil || res2.ExitCode != 1 {
		t.Errorf("resumed Wait = %+v, %v", res2, err)
	}
	if _, ok, _ := f.ResumeActivation("/run/other"); ok {
		t.Error("Resume of an unknown runDir found something")
	}
}
