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
