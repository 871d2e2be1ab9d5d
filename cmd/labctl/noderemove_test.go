package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/bustest"
	"github.com/lab-fleet/lab/proto"
)

// TestNodeRemove: labctl node remove refuses a machine that is online,
// and forgets one that is gone — nothing retained of it, status no longer
// lists it — and removes its identity.
func TestNodeRemove(t *testing.T) {
	clearBrokerEnv(t)
	dir := t.TempDir()
	ids := addIdentities(t, dir, "old=node", "live=node", "ops=controller")
	pw := func(name string) string { return readPassword(t, dir, name) }
	addr, _ := startBroker(t, "--identities", ids, "--http", "")
	ctx := context.Background()
	url := "mqtt://" + addr
	tp := proto.DefaultTopics
	// Both machines report as themselves; old then says goodbye (offline).
	report := func(name string, online bool) *bus.Client {
		c := bustest.Dial(t, url, name, nil, bus.Config{Username: name, Password: []byte(pw(name))})
		now := time.Now()
		st := &proto.NodeStatus{Node: name, UpdatedAt: now.UnixMilli()}
		st.Stamp(name, now)
		p := &proto.Presence{Node: name, Online: online, Since: now.UnixMilli()}
		p.Stamp(name, now)
		for topic, m := range map[string]proto.Message{tp.NodeStatus(name): st, tp.NodePresence(name): p} {
			b, _ := proto.Seal(m)
			if err := c.Publish(ctx, topic, b, true); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	report("old", false).Close(ctx)
	live := report("live", true)
	defer live.Close(context.Background())
	ops := []string{"--broker", url, "--username", "ops", "--password-file", filepath.Join(dir, "ops.password")}

	code, o, e := labctl(t, append([]string{"node", "remove", "live", "--identities", ids}, ops...)...)
	if code != 2 || !strings.Contains(e, "live is online: stop labd on it first") {
		t.Errorf("remove an online machine: exit %d\n%s%s", code, o, e)
	}
	code, o, e = labctl(t, append([]string{"node", "remove", "old", "--identities", ids}, ops...)...)
	if code != 0 || !strings.Contains(o, "old: its retained status, presence and desired state are cleared") || !strings.Contains(o, "old: identity removed") {
		t.Fatalf("remove old: exit %d\n%s%s", code, o, e)
	}
	b, _ := os.ReadFile(ids)
	if strings.Contains(string(b), "name: old") || !strings.Contains(string(b), "name: live") {
		t.Errorf("identities after the removal:\n%s", b)
	}
	code, o, e = labctl(t, append([]string{"status", "--json"}, ops...)...)
	var rows []struct{ Node string }
	if err := json.Unmarshal([]byte(o), &rows); code != 0 || err != nil || len(rows) != 1 || rows[0].Node != "live" {
		t.Errorf("status after the removal: exit %d, %v\n%s%s", code, err, o, e)
	}
	// Again: nothing to forget, nothing to remove; not an error.
	code, o, e = labctl(t, append([]string{"node", "remove", "old", "--identities", ids}, ops...)...)
	if code != 0 || !strings.Contains(o, "retains nothing of it") || !strings.Contains(o, "no identity of that name") {
		t.Errorf("remove old again: exit %d\n%s%s", code, o, e)
	}
	if code, _, e := labctl(t, "node", "remove", "old", "--identity-only"); code != 2 || !strings.Contains(e, "--identity-only needs --identities") {
		t.Errorf("--identity-only without --identities: exit %d %s", code, e)
	}
}
