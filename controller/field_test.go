package controller

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// Issue 14.5: a refused plan names the plan field at fault, in the plan's
// words and as a FieldError, never a front end's flag.
func TestRefusalsNameThePlanField(t *testing.T) {
	for _, tc := range []struct {
		field Field
		edit  func(*Plan)
	}{
		{FieldBatch, func(p *Plan) { p.Strategy = Strategy{Kind: StrategyRolling} }},
		{FieldBatch, func(p *Plan) { p.Strategy = Strategy{Kind: StrategyCanary, Batch: Size{N: -1}} }},
		{FieldCanary, func(p *Plan) { p.Strategy = Strategy{Kind: StrategyCanary, Canary: Size{N: -1}} }},
		{FieldWaveDeadline, func(p *Plan) { p.WaveDeadline = -time.Second }},
		{FieldMinExecuted, func(p *Plan) { p.MinExecuted = -1 }},
		{FieldOnFailure, func(p *Plan) { p.OnFailure = "panic" }},
	} {
		p := Plan{ID: "r-1", Targets: map[string]string{"n1": tlA}}
		tc.edit(&p)
		err := p.Validate()
		var fe *FieldError
		if !errors.Is(err, ErrInvalidPlan) || !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: err = %v, want ErrInvalidPlan as a FieldError of %q", tc.field, err, tc.field)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, string(tc.field)) || strings.Contains(msg, "--") {
			t.Errorf("%s: %q does not name the field in the plan's words", tc.field, msg)
		}
	}
}

func TestKeyNeededNamesTheField(t *testing.T) {
	c := New(nil, NewFleet(proto.DefaultTopics, nil), proto.DefaultTopics, "test")
	_, err := c.fromRecord(&Record{Plan: Plan{ID: "r-1"}, KeyID: "op"}, Options{})
	var fe *FieldError
	if !errors.Is(err, ErrKeyNeeded) || !errors.As(err, &fe) || fe.Field != FieldKey || strings.Contains(err.Error(), "--") {
		t.Fatalf("err = %v, want ErrKeyNeeded as a FieldError of %q", err, FieldKey)
	}
}
