package controller

import (
	"strings"
	"testing"

	"github.com/lab-fleet/lab/proto"
)

// Issue 13.1: a target queued for its wave that rejected the gate opening
// it (unsigned, unknown key) says so, instead of only "queued".
func TestProgressNamesARejectedGate(t *testing.T) {
	st := &proto.NodeStatus{Node: "n2", Execution: proto.Execution{Rollout: "r-1", Gen: 7, State: proto.StateQueued}}
	v := NodeView{Name: "n2", Status: st, Online: true, Seen: true,
		LastEvent: &proto.Event{Node: "n2", Rollout: "r-1", State: proto.StateRejected, Detail: "gate: message is not signed"}}
	r := progress(v, "r-1", 7, tlA)
	if r.State != proto.StateQueued || !r.Pending || !strings.Contains(r.Detail, "rejected the gate") || !strings.Contains(r.Detail, "not signed") {
		t.Fatalf("queued target with a rejected gate: %+v", r)
	}
	v.LastEvent = &proto.Event{Node: "n2", Rollout: "r-1", Prev: proto.StateQueued, State: proto.StateQueued}
	if r := progress(v, "r-1", 7, tlA); r.Detail != "" {
		t.Errorf("queued target, nothing rejected: detail %q", r.Detail)
	}
}
