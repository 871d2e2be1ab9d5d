package integration

import (
	"os"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// appendConfig adds YAML to the node's labd config (before Start).
func (n *Node) appendConfig(yaml string) {
	n.env.t.Helper()
	f, err := os.OpenFile(n.Config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		n.env.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(yaml); err != nil {
		n.env.t.Fatal(err)
	}
}

// Dependencies declared by the nodes themselves (labd's machine section,
// from lab.machine) order the rollout: storage, then db, then web, each
// after the one it depends on succeeded.
func TestDependencyChainDeploysInOrder(t *testing.T) {
	f := newFleet(t, []string{"web", "db", "storage"}, nil)
	f.nodes[0].appendConfig("machine: {dependencies: [db]}\n")
	f.nodes[1].appendConfig("machine: {dependencies: [storage], reboot_order: 1}\n")
	f.startAll()
	eventually(t, 10*time.Second, "machine metadata in status", func() bool {
		s, ok := f.Watch().Status("web")
		return ok && len(s.Machine.Dependencies) == 1
	})
	code, _ := f.publish("r-deps", "--timeout", "90s")
	if code != exitSucceeded {
		t.Fatalf("publish exit %d, want 0", code)
	}
	var done, started = map[string]int64{}, map[string]int64{}
	for _, n := range []string{"storage", "db", "web"} {
		s := f.Watch().AwaitState(t, n, "r-deps", proto.StateSucceeded, 10*time.Second)
		done[n] = s.Execution.Since
		for _, ev := range f.Watch().Events(n) {
			if ev.Rollout == "r-deps" && ev.State == proto.StateFetching {
				started[n] = ev.TS
			}
		}
	}
	if !(done["storage"] <= started["db"] && done["db"] <= started["web"]) {
		t.Errorf("not in dependency order: storage done %d, db started %d, db done %d, web started %d",
			done["storage"], started["db"], done["db"], started["web"])
	}
}
