package controller

import (
	"fmt"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// A 10,000-target rollout state is over the 1 MiB limit with every node
// in it: the succeeded ones are left out (and counted), the failed ones
// stay, and the message decodes.
func TestLargeRolloutStateLeavesSucceededOut(t *testing.T) {
	const n = 10000
	s := &proto.RolloutState{Rollout: "r-big", Strategy: StrategyAll, Action: proto.ActionSwitch, State: proto.RolloutRunning,
		Nodes: proto.NodeProgressMap{}, Counters: proto.Counters{Total: n}}
	var wave []string
	for i := range n {
		name := fmt.Sprintf("node-%05d", i)
		wave = append(wave, name)
		st := proto.StateSucceeded
		if i%1000 == 0 {
			st = proto.StateFailed
		}
		s.Nodes[name] = proto.NodeProgress{Wave: 1, Gen: uint64(1795975404320 + i), State: st, Online: true,
			Toplevel: "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-" + name + "-25.11"}
	}
	s.Waves = [][]string{wave}
	s.Stamp("labctl", time.Now())
	if _, err := proto.Seal(s); err == nil {
		t.Fatal("the full state fits: the test needs a larger rollout")
	}
	b, err := sealRolloutState(s)
	if err != nil {
		t.Fatal(err)
	}
	var got proto.RolloutState
	if err := proto.Decode(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Omitted != n-10 || len(got.Nodes) != 10 || len(got.Waves) != 1 || got.Counters.Total != n {
		t.Fatalf("omitted %d, nodes %d, waves %d, total %d", got.Omitted, len(got.Nodes), len(got.Waves), got.Counters.Total)
	}
	for name, p := range got.Nodes {
		if p.State != proto.StateFailed {
			t.Errorf("%s kept although %s", name, p.State)
		}
	}
}
