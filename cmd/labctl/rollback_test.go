package main

import (
	"strings"
	"testing"

	"github.com/lab-fleet/lab/proto"
)

func TestPreviousSystem(t *testing.T) {
	const a, b, c = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-a", "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-b", "/nix/store/cccccccccccccccccccccccccccccccc-nixos-system-c"
	for _, tc := range []struct {
		name    string
		st      proto.NodeStatus
		want    string
		wantErr string
	}{
		{"recorded previous", proto.NodeStatus{Current: b, Previous: a}, a, ""},
		{"rolled back already", proto.NodeStatus{Current: a, Previous: a, Execution: proto.Execution{Rollout: "r-1", State: proto.StateRolledBack}}, "",
			"already runs its previous system aaaaaaa…-nixos-system-a (its last rollout r-1 ended rolled-back)"},
		{"generations, newest first below the current one", proto.NodeStatus{Current: c, Generations: []proto.Generation{
			{Number: 1, Toplevel: a}, {Number: 2, Toplevel: b}, {Number: 3, Toplevel: c, Current: true}}}, b, ""},
		{"generations with the same system twice", proto.NodeStatus{Current: c, Generations: []proto.Generation{
			{Number: 4, Toplevel: a}, {Number: 5, Toplevel: c}, {Number: 6, Toplevel: c, Current: true}}}, a, ""},
		{"the current generation is not the newest", proto.NodeStatus{Current: b, Generations: []proto.Generation{
			{Number: 1, Toplevel: a}, {Number: 2, Toplevel: b, Current: true}, {Number: 3, Toplevel: c}}}, a, ""},
		{"one generation", proto.NodeStatus{Current: a, Generations: []proto.Generation{{Number: 1, Toplevel: a, Current: true}}}, "", "no previous system known"},
		{"nothing known", proto.NodeStatus{Current: a}, "", "no previous system known"},
		{"no current system", proto.NodeStatus{}, "", "no current system"},
	} {
		got, err := previousSystem(&tc.st)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: %q, %v; want an error with %q", tc.name, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}
