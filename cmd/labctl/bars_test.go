package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/proto"
)

func TestBarsShowWavesAndCounts(t *testing.T) {
	var out bytes.Buffer
	b := newBars(&out, true)
	b.wave(controller.WaveEvent{Index: 0, Total: 2, Nodes: []string{"n1"}})
	b.node(controller.NodeResult{Node: "n1", Wave: 1, State: proto.StateFetching, Pending: true})
	b.node(controller.NodeResult{Node: "n1", Wave: 1, State: proto.StateSucceeded})
	b.node(controller.NodeResult{Node: "n1", Wave: 1, State: proto.StateSucceeded}) // counted once
	b.wave(controller.WaveEvent{Index: 1, Total: 2, Nodes: []string{"n2", "n3"}})
	b.node(controller.NodeResult{Node: "n2", Wave: 2, State: proto.StateRolledBack, Detail: "check web failed"})
	time.Sleep(400 * time.Millisecond) // let it render once with both bars
	b.wave(controller.WaveEvent{Halted: true, Reason: "1 of 2 finished targets failed"})
	b.stop()
	s := out.String()
	for _, want := range []string{"wave 1/2", "wave 2/2", "n1 succeeded", "n2 rolled-back: check web failed", "HALTED: 1 of 2", "1 succeeded, 0 failed, 1 rolled back"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	if strings.Count(s, "n1 succeeded") != 1 {
		t.Errorf("n1 reported more than once:\n%s", s)
	}
}

func TestNotATerminal(t *testing.T) {
	if isTerminal(&bytes.Buffer{}) {
		t.Fatal("a buffer is a terminal")
	}
}
