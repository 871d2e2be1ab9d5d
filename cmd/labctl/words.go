package main

import (
	"errors"
	"regexp"
	"strings"

	"github.com/lab-fleet/lab/controller"
)

// planFlags is how labctl says each plan field the controller's errors
// and halt reasons name: by the flag that sets it. The controller speaks
// of its plan ("max failures 1"); the operator typed --max-failures 1.
var planFlags = map[controller.Field]string{
	controller.FieldRolloutID:    "--id",
	controller.FieldBatch:        "--batch",
	controller.FieldCanary:       "--canary",
	controller.FieldMaxFailures:  "--max-failures",
	controller.FieldMinExecuted:  "--min-executed",
	controller.FieldWaveDeadline: "--wave-deadline",
	controller.FieldOnFailure:    "--on-failure",
	controller.FieldKey:          "operator key (--key)",
}

// fieldWords matches one field's words as whole words.
var fieldWords = func() map[controller.Field]*regexp.Regexp {
	m := make(map[controller.Field]*regexp.Regexp, len(planFlags))
	for f := range planFlags {
		m[f] = regexp.MustCompile(`\b` + regexp.QuoteMeta(string(f)) + `\b`)
	}
	return m
}()

// sayField replaces the words of field f in s by labctl's flag for it.
func sayField(s string, f controller.Field) string {
	re, ok := fieldWords[f]
	if !ok {
		return s
	}
	return re.ReplaceAllLiteralString(s, planFlags[f])
}

// flagError is an error reworded for the operator; errors.Is and
// errors.As still see the original.
type flagError struct {
	msg string
	err error
}

func (e flagError) Error() string { return e.msg }
func (e flagError) Unwrap() error { return e.err }

// withFlags rewords a refusal the controller blames on one plan field
// (controller.FieldError) so that it names the flag instead.
func withFlags(err error) error {
	var fe *controller.FieldError
	if err == nil || !errors.As(err, &fe) {
		return err
	}
	inner := fe.Error()
	return flagError{msg: strings.Replace(err.Error(), inner, sayField(inner, fe.Field), 1), err: err}
}

// sayReason rewords a halt reason ("more than max failures 1") for the
// operator ("more than --max-failures 1").
func sayReason(reason string) string {
	return sayField(reason, controller.FieldMaxFailures)
}

// forPeople is res with its halt reason in labctl's words, in the summary
// and in the details of the targets it left unstarted; JSON output keeps
// the controller's words.
func forPeople(res *controller.Result) *controller.Result {
	if res == nil || res.Reason == "" {
		return res
	}
	out := *res
	out.Reason = sayReason(res.Reason)
	out.Nodes = make([]controller.NodeResult, len(res.Nodes))
	for i, n := range res.Nodes {
		n.Detail = strings.ReplaceAll(n.Detail, res.Reason, out.Reason)
		out.Nodes[i] = n
	}
	out.Rollback = forPeople(res.Rollback)
	return &out
}
