package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/proto"
)

const tl = proto.StoreDir + "0123456789abcdfghijklmnpqrsvwxyz-nixos-system-n1"

// Issue 14.5: the controller's refusals name plan fields; what labctl
// prints names the flag, and the error stays what it was for errors.Is.
func TestRefusalsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		edit func(*controller.Plan)
		want string
	}{
		{func(p *controller.Plan) { p.Strategy = controller.Strategy{Kind: controller.StrategyRolling} }, "invalid rollout: --batch must be at least 1 machine for rolling (got 0 of 1)"},
		{func(p *controller.Plan) {
			p.Strategy = controller.Strategy{Kind: controller.StrategyCanary, Canary: controller.Size{N: -1}}
		}, "invalid rollout: --canary must select at least 1 machine (got -1 of 1)"},
		{func(p *controller.Plan) { p.WaveDeadline = -time.Second }, "invalid rollout: --wave-deadline -1s is negative"},
		{func(p *controller.Plan) { p.MinExecuted = -1 }, "invalid rollout: --min-executed -1 is negative"},
		{func(p *controller.Plan) { p.OnFailure = "panic" }, `invalid rollout: --on-failure "panic": want halt or rollback`},
	} {
		p := controller.Plan{ID: "r-1", Targets: map[string]string{"n1": tl}}
		tc.edit(&p)
		err := withFlags(fmt.Errorf("publish: %w", usageError{p.Validate()}))
		if got := err.Error(); got != "publish: "+tc.want {
			t.Errorf("got %q, want %q", got, "publish: "+tc.want)
		}
		if !errors.Is(err, controller.ErrInvalidPlan) || exitCode(err) != exitUsage {
			t.Errorf("%q: no longer ErrInvalidPlan (exit %d)", err, exitCode(err))
		}
	}
	plain := errors.New("broker: connection refused")
	if withFlags(plain) != plain {
		t.Error("an error that names no field was reworded")
	}
}

func TestHaltReasonNamesTheFlag(t *testing.T) {
	reason := "2 of 3 finished targets failed, more than max failures 1"
	res := forPeople(&controller.Result{Halted: true, Reason: reason, Nodes: []controller.NodeResult{
		{Node: "n3", Detail: "not started: the rollout halted (" + reason + ")"}, {Node: "n1", Detail: "max failures of its own"}}})
	want := "2 of 3 finished targets failed, more than --max-failures 1"
	if res.Reason != want || res.Nodes[0].Detail != "not started: the rollout halted ("+want+")" || res.Nodes[1].Detail != "max failures of its own" {
		t.Errorf("reworded: %+v", res)
	}
	if !strings.Contains(sayReason(reason), "--max-failures 1") {
		t.Error(sayReason(reason))
	}
}
