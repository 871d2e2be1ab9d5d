package controller

import (
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// A command acknowledgement stays visible after later events of the same
// node (labctl reboot polls; an event in between must not hide the ack).
func TestFleetKeepsTheLastAck(t *testing.T) {
	f := NewFleet(proto.DefaultTopics, nil)
	seal := func(e *proto.Event) []byte {
		e.Stamp("n1", time.Now())
		b, err := proto.Seal(e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	topic := proto.DefaultTopics.NodeEvents("n1")
	f.Handle(topic, seal(&proto.Event{Node: "n1", Prev: proto.StateIdle, State: proto.StateIdle, Cmd: "c0ffee", Op: proto.OpReboot, Outcome: proto.CmdFailed, Detail: "not been booted with systemd"}))
	f.Handle(topic, seal(&proto.Event{Node: "n1", Rollout: "r-1", Gen: 1, Prev: proto.StateIdle, State: proto.StateQueued}))
	v, _ := f.Get("n1")
	if v.LastEvent == nil || v.LastEvent.State != proto.StateQueued {
		t.Fatalf("last event %+v", v.LastEvent)
	}
	if v.LastAck == nil || v.LastAck.Cmd != "c0ffee" || v.LastAck.Outcome != proto.CmdFailed {
		t.Fatalf("the acknowledgement was lost: %+v", v.LastAck)
	}
}

// A machine whose retained status and presence are cleared leaves the
// view, and watchers hear of it; a clear is not an invalid message.
func TestClearedMachineLeavesTheView(t *testing.T) {
	f := NewFleet(proto.DefaultTopics, nil)
	tp := proto.DefaultTopics
	st := &proto.NodeStatus{Node: "old", UpdatedAt: time.Now().UnixMilli()}
	st.Stamp("old", time.Now())
	b, err := proto.Seal(st)
	if err != nil {
		t.Fatal(err)
	}
	f.Handle(tp.NodeStatus("old"), b)
	p := &proto.Presence{Node: "old", Online: true, Since: time.Now().UnixMilli()}
	p.Stamp("old", time.Now())
	pb, _ := proto.Seal(p)
	f.Handle(tp.NodePresence("old"), pb)
	if got := len(f.Snapshot()); got != 1 {
		t.Fatalf("%d machines, want 1", got)
	}
	ch, stop := f.Watch()
	defer stop()
	f.Handle(tp.NodeStatus("old"), nil)
	if got := len(f.Snapshot()); got != 1 {
		t.Fatalf("status cleared, presence kept: %d machines, want 1", got)
	}
	f.Handle(tp.NodePresence("old"), nil)
	if got := len(f.Snapshot()); got != 0 {
		t.Fatalf("status and presence cleared: %d machines, want 0", got)
	}
	select {
	case <-ch:
	default:
		t.Error("watchers not told")
	}
	if f.Invalid() != 0 {
		t.Errorf("%d invalid messages counted for clears", f.Invalid())
	}
	f.Handle(tp.NodeStatus("never-seen"), nil) // nothing to forget
	if _, ok := f.Get("never-seen"); ok {
		t.Error("a clear created a machine")
	}
}
