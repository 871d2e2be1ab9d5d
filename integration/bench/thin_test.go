package main

import (
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// A thin node's messages are a labd's: well-formed, its own name in
// every place, a fresh id each, and its steps in time order (a watcher
// keeps the status with the newest updated_at).
func TestThinMessagesAreANodesOwn(t *testing.T) {
	f := &thinFleet{}
	k := setKey{rollout: "r1", gen: 7, toplevel: "/nix/store/00000000000000000000000000000002-nixos-system-bench-2", current: gen1, groups: "bench,blk-0"}
	ms, err := f.set(k)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	var last int64
	for _, st := range []proto.ExecState{proto.StateQueued, proto.StateFetching, proto.StateActivating, proto.StateVerifying, proto.StateSucceeded} {
		var s proto.NodeStatus
		if err := proto.Decode(ms.status[st].message("b00042"), &s); err != nil {
			t.Fatalf("%s status: %v", st, err)
		}
		if s.Node != "b00042" || s.From != "b00042" || s.Execution.State != st || s.Execution.Rollout != "r1" || len(s.Groups) != 2 {
			t.Fatalf("%s status: %+v", st, s)
		}
		if ids[s.ID] || len(s.ID) != 32 {
			t.Fatalf("%s status: id %q reused or malformed", st, s.ID)
		}
		ids[s.ID] = true
		if s.UpdatedAt <= last {
			t.Fatalf("%s status: updated_at %d not after the step before (%d)", st, s.UpdatedAt, last)
		}
		last = s.UpdatedAt
	}
	// A renewed set stamps later than the set before it, and renewal
	// waits longer than a set's span of stamps: a step taken from it never
	// goes back in time behind a step taken from the old one.
	if span := time.Duration(len(thinStates)) * time.Millisecond; templateAge <= span {
		t.Fatalf("templateAge %s is within a set's span of stamps (%s)", templateAge, span)
	}
	var before proto.NodeStatus
	if err := proto.Decode(ms.status[proto.StateSucceeded].message("b00042"), &before); err != nil {
		t.Fatal(err)
	}
	f.sets[k].created = f.sets[k].created.Add(-2 * templateAge)
	again, err := f.set(k)
	if err != nil || again == ms {
		t.Fatalf("set not renewed after templateAge: %v", err)
	}
	var s proto.NodeStatus
	if err := proto.Decode(again.status[proto.StateSucceeded].message("b00042"), &s); err != nil {
		t.Fatal(err)
	}
	if s.UpdatedAt < before.UpdatedAt {
		t.Fatalf("renewed set stamps %d, before the old set's %d", s.UpdatedAt, before.UpdatedAt)
	}
	var e proto.Event
	if err := proto.Decode(ms.event[[2]proto.ExecState{proto.StateFetching, proto.StateActivating}].message("b00042"), &e); err != nil {
		t.Fatal(err)
	}
	if e.Node != "b00042" || e.Prev != proto.StateFetching || e.State != proto.StateActivating {
		t.Fatalf("event: %+v", e)
	}
}
