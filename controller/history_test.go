package controller

import (
	"fmt"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// The fleet keeps the newest HistorySize happenings, oldest first, and a
// rollout's phase and wave changes beside the nodes' events.
func TestFleetHistoryIsBoundedAndOrdered(t *testing.T) {
	f := NewFleet(proto.DefaultTopics, nil)
	seal := func(m interface {
		proto.Message
		Stamp(string, time.Time)
	}, from string, at time.Time) []byte {
		m.Stamp(from, at)
		b, err := proto.Seal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	start := time.Now().Add(-time.Hour)
	total := HistorySize + 10
	for i := range total {
		f.Handle(proto.DefaultTopics.NodeEvents("n1"), seal(&proto.Event{Node: "n1", Rollout: "r-1", Gen: uint64(i + 1),
			Prev: proto.StateIdle, State: proto.StateQueued, Detail: fmt.Sprint(i)}, "n1", start.Add(time.Duration(i)*time.Millisecond)))
	}
	all := f.History(nil, HistorySize*2)
	if len(all) != HistorySize {
		t.Fatalf("kept %d happenings, want %d", len(all), HistorySize)
	}
	if all[0].Event.Detail != "10" || all[len(all)-1].Event.Detail != fmt.Sprint(total-1) {
		t.Fatalf("oldest %q newest %q: want the newest %d, oldest first", all[0].Event.Detail, all[len(all)-1].Event.Detail, HistorySize)
	}
	if got := f.History(nil, 3); len(got) != 3 || got[2].Event.Detail != fmt.Sprint(total-1) {
		t.Fatalf("limit 3 gave %d, the last %+v", len(got), got[len(got)-1].Event)
	}

	rs := &proto.RolloutState{Rollout: "r-2", State: proto.RolloutRunning, OpenWave: 1, Waves: [][]string{{"a"}, {"b"}}}
	topic := proto.DefaultTopics.Rollout("r-2")
	f.Handle(topic, seal(rs, "ctl", time.Now()))
	f.Handle(topic, seal(rs, "ctl", time.Now())) // the same again: no new happening
	rs.OpenWave = 2
	f.Handle(topic, seal(rs, "ctl", time.Now()))
	changes := f.History(func(h Happening) bool { return h.RolloutID() == "r-2" }, 10)
	if len(changes) != 2 || changes[0].Rollout.OpenWave != 1 || changes[1].Rollout.OpenWave != 2 || changes[1].Rollout.Waves != 2 {
		t.Fatalf("rollout changes %+v", changes)
	}
	v, _ := f.Get("n1")
	if want := start.Add(time.Duration(total-1) * time.Millisecond).Truncate(time.Millisecond); !v.LastSeen.Equal(want) {
		t.Errorf("last seen %v, want the newest event's time %v", v.LastSeen, want)
	}
}
