package access

import (
	"slices"
	"strings"
	"testing"
)

// mosquittoGrants reads an acl_file as mosquitto applies it: topic lines
// belong to the user line above them, pattern lines to every user (with %u
// replaced). It returns, per user of names, "read"/"write" → topics.
func mosquittoGrants(t *testing.T, acl string, names []string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	for _, n := range names {
		out[n] = map[string][]string{}
	}
	user := ""
	var patterns [][2]string
	for _, l := range strings.Split(acl, "\n") {
		fs := strings.Fields(l)
		switch {
		case len(fs) == 0 || strings.HasPrefix(fs[0], "#"):
		case len(fs) == 2 && fs[0] == "user":
			user = fs[1]
		case len(fs) == 3 && fs[0] == "topic" && (fs[1] == "read" || fs[1] == "write"):
			if user == "" {
				t.Fatalf("topic line before any user line (it would apply to anonymous clients): %q", l)
			}
			out[user][fs[1]] = append(out[user][fs[1]], fs[2])
		case len(fs) == 3 && fs[0] == "pattern" && (fs[1] == "read" || fs[1] == "write"):
			patterns = append(patterns, [2]string{fs[1], fs[2]})
		default:
			t.Fatalf("unexpected acl line %q", l)
		}
	}
	for _, n := range names {
		for _, p := range patterns {
			out[n][p[0]] = append(out[n][p[0]], strings.ReplaceAll(p[1], "%u", n))
		}
	}
	return out
}

// The mosquitto rules grant every identity what the broker's own rules do.
// The only extras are the node pattern lines, which mosquitto applies to
// controllers and viewers too: lab/v1/node/<their name>/..., topics of a
// node that cannot exist (names are unique). Nobody but controllers gets
// anything under ctl/, and a controller reads only its own answers.
func TestMosquittoACLGrantsTheSame(t *testing.T) {
	tb := testTable(t)
	names := []string{"n1", "n2", "ops", "ci", "grafana"}
	acl := tb.MosquittoACL()
	got := mosquittoGrants(t, acl, names)
	for _, n := range names {
		id, _ := tb.Lookup(n)
		for op, want := range map[string][]string{"write": tb.publishes(id), "read": tb.reads(id)} {
			for _, w := range want {
				if !slices.Contains(got[n][op], w) {
					t.Errorf("mosquitto does not let %s %s %s", n, op, w)
				}
			}
			for _, g := range got[n][op] {
				if !slices.Contains(want, g) && !strings.HasPrefix(g, "lab/v1/node/"+n+"/") {
					t.Errorf("mosquitto lets %s %s %s, the broker does not", n, op, g)
				}
				if strings.Contains(g, "/ctl/") && id.Role != RoleController {
					t.Errorf("mosquitto lets %s (%s) %s %s", n, id.Role, op, g)
				}
			}
		}
	}
	for _, l := range []string{"topic write lab/v1/ctl/req/+", "topic write lab/v1/ctl/res/+/#", "topic read lab/v1/ctl/req/+", "topic read lab/v1/ctl/res/ops/#"} {
		if !strings.Contains(acl, "user ops\n") || !slices.Contains(got["ops"][strings.Fields(l)[1]], strings.Fields(l)[2]) {
			t.Errorf("no %q for ops in:\n%s", l, acl)
		}
	}
	if strings.Contains(acl, "topic read lab/v1/#") || strings.Contains(acl, "pattern read lab/v1/ctl") {
		t.Errorf("a controller may read other clients' answers:\n%s", acl)
	}
}

// Home Assistant, given a viewer identity, reads its discovery configs
// and states and publishes its birth under mosquitto too; the controller
// publishes them.
func TestMosquittoACLHomeAssistant(t *testing.T) {
	tb := testTable(t)
	got := mosquittoGrants(t, tb.MosquittoACL(), []string{"n1", "n2", "ops", "ci", "grafana"})
	for _, c := range []struct{ who, op, topic string }{
		{"grafana", "read", "homeassistant/#"}, {"grafana", "read", "lab/v1/ha/#"}, {"grafana", "write", "homeassistant/status"},
		{"ops", "write", "homeassistant/#"}, {"ops", "write", "lab/v1/ha/#"}, {"ops", "read", "homeassistant/status"},
	} {
		if !slices.Contains(got[c.who][c.op], c.topic) {
			t.Errorf("mosquitto does not let %s %s %s", c.who, c.op, c.topic)
		}
	}
	for _, w := range got["grafana"]["write"] {
		if w != "homeassistant/status" && !strings.HasPrefix(w, "lab/v1/node/grafana/") {
			t.Errorf("a viewer may write %s", w)
		}
	}
	for _, op := range []string{"read", "write"} {
		for _, g := range got["n1"][op] {
			if strings.HasPrefix(g, "homeassistant/") || strings.HasPrefix(g, "lab/v1/ha/") {
				t.Errorf("a node may %s %s", op, g)
			}
		}
	}
}
