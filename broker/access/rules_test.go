package access

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lab-fleet/lab/proto"
)

func testTable(t testing.TB) *Table {
	t.Helper()
	h, err := HashPassword([]byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	return tableOf(t, h,
		Identity{Name: "n1", Role: RoleNode, Groups: []string{"web"}},
		Identity{Name: "n2", Role: RoleNode, Groups: []string{"db"}},
		Identity{Name: "ops", Role: RoleController},
		Identity{Name: "ci", Role: RoleController},
		Identity{Name: "grafana", Role: RoleViewer})
}

// tableOf builds a table of ids, each with the password hash h.
func tableOf(t testing.TB, h string, ids ...Identity) *Table {
	t.Helper()
	for i := range ids {
		ids[i].PasswordHash = h
	}
	tb, err := New(File{Identities: ids}, proto.DefaultTopics)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestRules(t *testing.T) {
	tb := testTable(t)
	id := func(n string) Identity { i, _ := tb.Lookup(n); return i }
	type rule struct {
		who, topic string
		write, ok  bool
	}
	for _, r := range []rule{
		// A node publishes only its own status, presence and events.
		{"n1", "lab/v1/node/n1/status", true, true},
		{"n1", "lab/v1/node/n1/presence", true, true},
		{"n1", "lab/v1/node/n1/events", true, true},
		{"n1", "lab/v1/node/n2/status", true, false},
		{"n1", "lab/v1/node/n2/presence", true, false},
		{"n1", "lab/v1/node/n1/desired", true, false},
		{"n1", "lab/v1/group/web/gate", true, false},
		{"n1", "lab/v1/node/n1/cmd", true, false},
		{"n1", "lab/v1/all/cmd", true, false},
		{"n1", "lab/v1/rollout/r-1", true, false},
		{"n1", "lab/v1/node/+/status", true, false},
		// It reads only its own desired and commands, its groups' gates and commands, all/cmd.
		{"n1", "lab/v1/node/n1/desired", false, true},
		{"n1", "lab/v1/node/n1/cmd", false, true},
		{"n1", "lab/v1/group/web/gate", false, true},
		{"n1", "lab/v1/group/web/cmd", false, true},
		{"n1", "lab/v1/all/cmd", false, true},
		{"n1", "lab/v1/node/n2/desired", false, false},
		{"n1", "lab/v1/node/+/desired", false, false},
		{"n1", "lab/v1/group/db/gate", false, false},
		{"n1", "lab/v1/group/+/gate", false, false},
		{"n1", "lab/v1/#", false, false},
		{"n1", "#", false, false},
		{"n1", "lab/v1/node/n2/status", false, false},
		// Its own secrets only, which it reads and never writes.
		{"n1", "lab/v1/node/n1/secret/db", false, true},
		{"n1", "lab/v1/node/n1/secret/+", false, true},
		{"n1", "lab/v1/node/n2/secret/db", false, false},
		{"n1", "lab/v1/node/n2/secret/+", false, false},
		{"n1", "lab/v1/node/+/secret/+", false, false},
		{"n1", "lab/v1/node/n1/secret/db", true, false},
		{"n1", "lab/v1/node/n2/secret/db", true, false},
		// Nodes have nothing to do with the controller service's API.
		{"n1", "lab/v1/ctl/req/submit", true, false},
		{"n1", "lab/v1/ctl/res/n1/x", true, false},
		{"n1", "lab/v1/ctl/req/+", false, false},
		{"n1", "lab/v1/ctl/res/n1/#", false, false},
		{"n1", "lab/v1/ctl/#", false, false},
		// Controllers publish desired, gates, commands and rollouts, read everything of lab.
		{"ops", "lab/v1/node/n1/desired", true, true},
		{"ops", "lab/v1/node/n1/secret/db", true, true},
		{"ops", "lab/v1/node/+/secret/+", false, true},
		{"ops", "lab/v1/group/web/gate", true, true},
		{"ops", "lab/v1/group/web/cmd", true, true},
		{"ops", "lab/v1/node/n1/cmd", true, true},
		{"ops", "lab/v1/all/cmd", true, true},
		{"ops", "lab/v1/rollout/r-1", true, true},
		{"ops", "lab/v1/node/n1/status", true, false},
		{"ops", "lab/v1/node/n1/presence", true, false},
		{"ops", "other/topic", true, false},
		{"ops", "lab/v1/node/+/status", false, true},
		{"ops", "lab/v1/node/#", false, true},
		{"ops", "lab/v1/group/#", false, true},
		{"ops", "lab/v1/all/#", false, true},
		{"ops", "lab/v1/rollout/#", false, true},
		{"ops", "lab/v1/json/#", false, true},
		{"ops", "#", false, false},
		{"ops", "$SYS/#", false, false},
		// ... but other clients' answers from the controller service.
		{"ops", "lab/v1/#", false, false},
		{"ops", "lab/v1/ctl/#", false, false},
		{"ops", "lab/v1/other/x", false, false},
		// Controllers request, and (the service) answer anyone; each reads
		// every request and only its own answers.
		{"ops", "lab/v1/ctl/req/submit", true, true},
		{"ops", "lab/v1/ctl/res/ci/r-1", true, true},
		{"ops", "lab/v1/ctl/res/ops/r-1", true, true},
		{"ops", "lab/v1/ctl/req/+", true, false},
		{"ops", "lab/v1/ctl/res", true, false},
		{"ops", "lab/v1/ctl/other", true, false},
		{"ops", "lab/v1/ctl/req/+", false, true},
		{"ops", "lab/v1/ctl/req/submit", false, true},
		{"ops", "lab/v1/ctl/res/ops/#", false, true},
		{"ops", "lab/v1/ctl/res/ops/r-1", false, true},
		{"ops", "lab/v1/ctl/res/ci/#", false, false},
		{"ops", "lab/v1/ctl/res/ci/r-1", false, false},
		{"ops", "lab/v1/ctl/res/+/#", false, false},
		{"ops", "lab/v1/ctl/res/#", false, false},
		{"ci", "lab/v1/ctl/res/ci/#", false, true},
		{"ci", "lab/v1/ctl/res/ops/#", false, false},
		// Viewers read status, presence, rollouts and the JSON mirror; they publish nothing of lab.
		{"grafana", "lab/v1/node/+/status", false, true},
		{"grafana", "lab/v1/node/n1/presence", false, true},
		{"grafana", "lab/v1/rollout/+", false, true},
		{"grafana", "lab/v1/json/#", false, true},
		{"grafana", "lab/v1/node/+/desired", false, false},
		{"grafana", "lab/v1/node/n1/secret/db", false, false},
		{"grafana", "lab/v1/node/+/secret/+", false, false},
		{"grafana", "lab/v1/node/n1/secret/db", true, false},
		{"grafana", "lab/v1/node/+/+", false, false},
		{"grafana", "lab/v1/#", false, false},
		{"grafana", "lab/v1/node/n1/status", true, false},
		{"grafana", "lab/v1/ctl/req/submit", true, false},
		{"grafana", "lab/v1/ctl/res/grafana/x", true, false},
		{"grafana", "lab/v1/ctl/req/+", false, false},
		{"grafana", "lab/v1/ctl/res/grafana/#", false, false},
		{"grafana", "lab/v1/ctl/res/ops/#", false, false},
		// Home Assistant (a viewer) reads the discovery configs and the
		// JSON states they name, and publishes its birth and Last Will
		// only; the controller service publishes both and reads the birth.
		{"grafana", "homeassistant/#", false, true},
		{"grafana", "homeassistant/update/lab_n1_system/config", false, true},
		{"grafana", "lab/v1/ha/#", false, true},
		{"grafana", "lab/v1/ha/n1/state", false, true},
		{"grafana", "homeassistant/status", true, true},
		{"grafana", "homeassistant/update/lab_n1_system/config", true, false},
		{"grafana", "homeassistant/#", true, false},
		{"grafana", "lab/v1/ha/n1/state", true, false},
		{"grafana", "#", false, false},
		{"ops", "homeassistant/update/lab_n1_system/config", true, true},
		{"ops", "homeassistant/binary_sensor/lab_n1_online/config", true, true},
		{"ops", "lab/v1/ha/n1/state", true, true},
		{"ops", "homeassistant/status", false, true},
		{"ops", "lab/v1/ha/#", false, true},
		{"ops", "homeassistant/#", false, false},
		{"n1", "homeassistant/status", true, false},
		{"n1", "homeassistant/#", false, false},
		{"n1", "lab/v1/ha/n1/state", true, false},
		{"n1", "lab/v1/ha/#", false, false},
	} {
		var got bool
		if r.write {
			got = tb.CanPublish(id(r.who), r.topic)
		} else {
			got = tb.CanSubscribe(id(r.who), r.topic)
		}
		if got != r.ok {
			verb := "subscribe to"
			if r.write {
				verb = "publish to"
			}
			t.Errorf("%s may %s %s: %v, want %v", r.who, verb, r.topic, got, r.ok)
		}
	}
	if tb.CanPublish(Identity{Name: "ghost"}, "lab/v1/node/ghost/status") || tb.CanSubscribe(Identity{Name: "ghost"}, "lab/v1/#") {
		t.Error("an identity without a role may do something")
	}
}

func TestAuthenticate(t *testing.T) {
	tb := testTable(t)
	if _, ok := tb.Authenticate("n1", []byte("s3cret")); !ok {
		t.Error("right password refused")
	}
	for _, c := range []struct{ user, pass string }{{"n1", "wrong"}, {"nobody", "s3cret"}, {"", ""}} {
		if _, ok := tb.Authenticate(c.user, []byte(c.pass)); ok {
			t.Errorf("%q/%q accepted", c.user, c.pass)
		}
	}
}

// A node connects under its name only; a controller or viewer under any
// client id that belongs to no other identity, never one that would take
// another identity's session over.
func TestClientIDs(t *testing.T) {
	h, err := HashPassword([]byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	tb := tableOf(t, h, Identity{Name: "n1", Role: RoleNode}, Identity{Name: "a-b", Role: RoleNode},
		Identity{Name: "a", Role: RoleViewer}, Identity{Name: "ops", Role: RoleController}, Identity{Name: "ops-ci", Role: RoleController})
	for _, c := range []struct {
		who, client string
		ok          bool
	}{
		{"n1", "n1", true}, {"n1", "n2", false}, {"n1", "n1-2", false}, {"n1", "", false},
		{"ops", "ops", true}, {"ops", "ops-7f3a", true}, {"ops", "opsx", true}, {"ops", "mqtt-explorer-1a2b", true},
		{"ops", "", true}, // assigned by the broker
		{"ops", "n1", false}, {"ops", "a-b", false}, {"ops", "a", false}, {"ops", "a-x", false},
		{"ops", "ops-ci", false}, {"ops", "ops-ci-7", false}, {"ops-ci", "ops-ci-7", true}, {"ops-ci", "ops-7", false},
		{"a", "a-1", true}, {"a", "a-b", false}, {"a", "a-b-1", true}, {"a", "ops-1", false}, {"a", "grafana", true},
	} {
		id, _ := tb.Lookup(c.who)
		if got := tb.ClientIDAllowed(id, c.client); got != c.ok {
			t.Errorf("%s as client %q: %v, want %v", c.who, c.client, got, c.ok)
		}
	}
}

func TestLoadRefusesBadFiles(t *testing.T) {
	h, _ := HashPassword([]byte("x"))
	for _, c := range []struct{ name, yaml, want string }{
		{"unknown role", "identities: [{name: a, role: admin, password_hash: '" + h + "'}]", "role"},
		{"plaintext password", "identities: [{name: a, role: node, password_hash: hunter2}]", "password_hash"},
		{"bad name", "identities: [{name: A!, role: node, password_hash: '" + h + "'}]", "name"},
		{"duplicate", "identities: [{name: a, role: node, password_hash: '" + h + "'}, {name: a, role: viewer, password_hash: '" + h + "'}]", "twice"},
		{"groups on a viewer", "identities: [{name: a, role: viewer, groups: [web], password_hash: '" + h + "'}]", "groups"},
		{"unknown key", "identities: [{name: a, role: node, password: x, password_hash: '" + h + "'}]", "password"},
	} {
		path := filepath.Join(t.TempDir(), "identities.yaml")
		if err := os.WriteFile(path, []byte(c.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path, proto.DefaultTopics)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func FuzzCovers(f *testing.F) {
	for _, s := range []string{"lab/v1/node/+/status", "lab/v1/#", "#", "+/+", "a/b"} {
		f.Add(s, s)
	}
	for _, c := range [][2]string{{"a/#", "a"}, {"a/b", "a"}, {"a", "a/b"}, {"+", "#"}, {"", ""}, {"a/+/c", "a/#"}} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, p, x string) {
		// A filter covers itself, and "#" covers everything.
		if !covers(p, p) || !covers("#", x) {
			t.Fatalf("covers(%q, %q)", p, x)
		}
		// The allocation-free walk agrees with the plain definition.
		if got, want := covers(p, x), coversBySplit(p, x); got != want {
			t.Fatalf("covers(%q, %q) = %v, by split %v", p, x, got, want)
		}
	})
}

// coversBySplit is covers written plainly, level by level after a split:
// the reference the fuzzer compares the hot-path version with.
func coversBySplit(p, f string) bool {
	pl, fl := strings.Split(p, "/"), strings.Split(f, "/")
	for i, pp := range pl {
		if pp == "#" {
			return true
		}
		if i >= len(fl) {
			return false
		}
		switch fp := fl[i]; {
		case fp == "#":
			return false
		case pp == "+":
			continue
		case pp != fp:
			return false
		}
	}
	return len(pl) == len(fl)
}

// TestTokenHashes: a generated token is stored as its SHA-256 digest and
// checked as such; bcrypt hashes of older files (and of passwords people
// chose) still work beside them; short secrets are refused as tokens and
// malformed digests refused when the file is loaded.
func TestTokenHashes(t *testing.T) {
	token := []byte("Yx3oN0c1r7bqk2Pq0kK3kT9uV4e6Jm1aQw5sZ8dLfGh") // what node add writes: 32+ random base64 characters
	th, err := HashToken(token)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(th, "$sha256$") || len(th) != len("$sha256$")+64 {
		t.Fatalf("token hash %q: want $sha256$ and 64 hex digits", th)
	}
	if _, err := HashToken([]byte("hunter2")); err == nil {
		t.Error("a 7-character password was hashed as a token")
	}
	bh, err := HashPassword([]byte("a person's password"))
	if err != nil {
		t.Fatal(err)
	}
	tb, err := New(File{Identities: []Identity{{Name: "n1", Role: RoleNode, PasswordHash: th}, {Name: "old", Role: RoleNode, PasswordHash: bh}}}, proto.DefaultTopics)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, pass string
		ok         bool
	}{
		{"n1", string(token), true},
		{"n1", string(token[:len(token)-1]), false},
		{"n1", "", false},
		{"old", "a person's password", true},
		{"old", string(token), false},
		{"nobody", string(token), false},
		{"nobody", "lab: no such user", false}, // the dummy digest's own secret
	} {
		if _, ok := tb.Authenticate(c.user, []byte(c.pass)); ok != c.ok {
			t.Errorf("Authenticate(%q, %q) = %v, want %v", c.user, c.pass, ok, c.ok)
		}
	}
	for _, bad := range []string{"$sha256$", "$sha256$zz", "$sha256$" + strings.Repeat("a", 62), "sha256:" + strings.Repeat("a", 64)} {
		if _, err := New(File{Identities: []Identity{{Name: "a", Role: RoleNode, PasswordHash: bad}}}, proto.DefaultTopics); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "password_hash") {
			t.Errorf("hash %q: %v, want refused naming password_hash", bad, err)
		}
	}
}
