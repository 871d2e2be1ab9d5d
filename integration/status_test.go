package integration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// labctl status shows every node's state, system and presence; a node
// that stops cleanly (SIGTERM) or dies (SIGKILL: its Last Will) shows
// offline.
func TestStatusAndPresence(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2", "n3"}, nil)
	f.startAll()
	if code, _ := f.publish("r-st"); code != exitSucceeded {
		t.Fatalf("publish exit %d", code)
	}
	type row struct {
		Node       string `json:"node"`
		Online     bool   `json:"online"`
		State      string `json:"state"`
		Rollout    string `json:"rollout"`
		Gen        uint64 `json:"gen"`
		AppliedGen uint64 `json:"applied_gen"`
		Current    string `json:"current"`
	}
	status := func() map[string]row {
		t.Helper()
		code, out, errOut := f.Labctl("status", "--json")
		if code != 0 {
			t.Fatalf("status exit %d: %s", code, errOut)
		}
		var rows []row
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("status --json is not a JSON array of nodes: %v\n%s", err, out)
		}
		m := map[string]row{}
		for _, r := range rows {
			m[r.Node] = r
		}
		return m
	}
	rows := status()
	for _, n := range f.nodes {
		r := rows[n.Name]
		if !r.Online || r.State != "succeeded" || r.Rollout != "r-st" || r.Current != f.gen2[n.Name] || r.Gen == 0 || r.AppliedGen != r.Gen {
			t.Errorf("%s: %+v", n.Name, r)
		}
	}
	f.nodes[0].Stop() // SIGTERM: labd says goodbye
	f.nodes[1].Kill() // SIGKILL: the broker sends its Last Will
	eventually(t, 30*time.Second, "n1 and n2 offline", func() bool {
		rows := status()
		return !rows["n1"].Online && !rows["n2"].Online && rows["n3"].Online
	})
	code, out, _ := f.Labctl("status")
	if code != 0 || !strings.Contains(out, "ONLINE") {
		t.Fatalf("status table: exit %d\n%s", code, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "n1 ") && !strings.Contains(line, " no ") {
			t.Errorf("n1 not shown offline: %q", line)
		}
	}
}
