package controller

import "fmt"

// Field names a plan setting in the words errors and halt reasons use for
// it. The library never names a front end's options: a front end that
// wants its own words for a field (labctl: FieldBatch is --batch) finds
// the field with errors.As(err, &*FieldError) and replaces these words.
type Field string

// The fields errors and halt reasons speak of.
const (
	FieldRolloutID    Field = "rollout id"   // Plan.ID
	FieldBatch        Field = "batch size"   // Plan.Strategy.Batch
	FieldCanary       Field = "canary size"  // Plan.Strategy.Canary
	FieldMaxFailures  Field = "max failures" // Plan.MaxFailures (also in halt reasons)
	FieldMinExecuted  Field = "min executed" // Plan.MinExecuted
	FieldWaveDeadline Field = "wave deadline"
	FieldOnFailure    Field = "on failure"
	FieldKey          Field = "operator key" // Options.Key
)

// FieldError is a refusal caused by one field. Err is the whole refusal:
// its text names Field in the field's words, and it wraps the sentinel
// (ErrInvalidPlan, ErrRolloutExists, ErrKeyNeeded), so errors.Is sees
// through a FieldError.
type FieldError struct {
	Field Field
	Err   error
}

func (e *FieldError) Error() string { return e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// fieldErr is fmt.Errorf for a refusal caused by field f.
func fieldErr(f Field, format string, args ...any) error {
	return &FieldError{Field: f, Err: fmt.Errorf(format, args...)}
}
