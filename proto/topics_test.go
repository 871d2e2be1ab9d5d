package proto

import (
	"errors"
	"strings"
	"testing"
)

func TestTopicsBuildAndParse(t *testing.T) {
	tp, err := NewTopics("")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		topic    string
		want     Route
		noMirror bool // not mirrored under json/
	}{
		{tp.NodeDesired("n1"), Route{Kind: TopicDesired, Node: "n1"}, false},
		{tp.NodeCmd("n1"), Route{Kind: TopicNodeCmd, Node: "n1"}, false},
		{tp.NodeStatus("pi-4"), Route{Kind: TopicStatus, Node: "pi-4"}, false},
		{tp.NodePresence("n1"), Route{Kind: TopicPresence, Node: "n1"}, false},
		{tp.NodeEvents("n1"), Route{Kind: TopicEvents, Node: "n1"}, false},
		{tp.GroupGate("canary"), Route{Kind: TopicGate, Group: "canary"}, false},
		{tp.GroupCmd("canary"), Route{Kind: TopicGroupCmd, Group: "canary"}, false},
		{tp.AllCmd(), Route{Kind: TopicAllCmd}, false},
		{tp.Rollout("r-1"), Route{Kind: TopicRollout, ID: "r-1"}, false},
		{tp.CtlRequest("submit"), Route{Kind: TopicCtlRequest, ID: "submit"}, true},
		{tp.NodeSecret("n1", "db-password"), Route{Kind: TopicSecret, Node: "n1", ID: "db-password"}, true},
		{tp.CtlResponse("ops", "c-7f3a"), Route{Kind: TopicCtlResponse, Client: "ops", ID: "c-7f3a"}, true},
	}
	for _, c := range cases {
		if !strings.HasPrefix(c.topic, "lab/v1/") {
			t.Errorf("%s: wrong prefix", c.topic)
		}
		deepest := tp.JSON(c.topic)
		if c.noMirror {
			deepest = c.topic
		}
		if n := strings.Count(deepest, "/"); n > MaxTopicSlashes {
			t.Errorf("%s: %d slashes", c.topic, n)
		}
		got, err := tp.Parse(c.topic)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", c.topic, got, err, c.want)
		}
	}
	if got := tp.JSON(tp.NodeStatus("n1")); got != "lab/v1/json/node/n1/status" {
		t.Errorf("JSON = %q", got)
	}
	if tp.AllStatus() != "lab/v1/node/+/status" {
		t.Errorf("AllStatus = %q", tp.AllStatus())
	}
	for got, want := range map[string]string{
		tp.CtlRequest("submit"):      "lab/v1/ctl/req/submit",
		tp.CtlRequests():             "lab/v1/ctl/req/+",
		tp.CtlResponse("ops", "r-1"): "lab/v1/ctl/res/ops/r-1",
		tp.CtlResponses("ops"):       "lab/v1/ctl/res/ops/#",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

// The deepest topics of the layout still fit MaxTopicSlashes under the
// deepest prefix NewTopics accepts.
func TestTopicsDeepestPrefix(t *testing.T) {
	tp, err := NewTopics("a/b/c/d")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{tp.JSON(tp.NodeStatus("n1")), tp.CtlResponse("ops", "x"), tp.CtlResponses("ops"), tp.NodeSecret("n1", "x")} {
		if n := strings.Count(s, "/"); n != MaxTopicSlashes {
			t.Errorf("%s: %d slashes, want exactly %d: deepest is off", s, n, MaxTopicSlashes)
		}
	}
	if r, err := tp.Parse(tp.CtlResponse("ops", "x")); err != nil || r != (Route{Kind: TopicCtlResponse, Client: "ops", ID: "x"}) {
		t.Errorf("Parse = %+v, %v", r, err)
	}
}

func TestTopicsRejects(t *testing.T) {
	tp := DefaultTopics
	for _, s := range []string{
		"lab/v1/node/N1/status", "lab/v1/node/+/status", "lab/v1/node/n1/reboot", "other/node/n1/status",
		"lab/v1/node/n1/status/x", "lab/v1/group//gate", "lab/v1/rollout/" + strings.Repeat("a", 64), "lab/v1",
		// ctl: a verb, a client and an id are identifiers; nothing else lives under ctl/.
		"lab/v1/ctl/req/Submit", "lab/v1/ctl/req/+", "lab/v1/ctl/req/", "lab/v1/ctl/req", "lab/v1/ctl/req/submit/x",
		"lab/v1/ctl/res/ops", "lab/v1/ctl/res/ops/", "lab/v1/ctl/res//x", "lab/v1/ctl/res/+/x", "lab/v1/ctl/res/ops/#",
		"lab/v1/ctl/res/Ops/x", "lab/v1/ctl/res/ops/a_b", "lab/v1/ctl/res/ops/x/y", "lab/v1/ctl/res/ops/" + strings.Repeat("a", 64),
		"lab/v1/ctl/other/x", "lab/v1/ctl/submit", "lab/v1/json/ctl/req/submit",
	} {
		if _, err := tp.Parse(s); !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("Parse(%q) = %v, want ErrInvalidTopic", s, err)
		}
	}
	for _, p := range []string{"a/b/c/d/e", "a/+", "#", "$SYS", "/a", "a/", "a//b"} {
		if _, err := NewTopics(p); !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("NewTopics(%q) = %v", p, err)
		}
	}
	if tp, err := NewTopics("home/lab/v1"); err != nil || tp.NodeStatus("n") != "home/lab/v1/node/n/status" {
		t.Errorf("3-level prefix: %v", err)
	}
}

func TestValidID(t *testing.T) {
	for _, ok := range []string{"n1", "a", "pi-4b", strings.Repeat("x", 63)} {
		if err := ValidID(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "N1", "a_b", "a/b", "a+", "#", "a b", strings.Repeat("x", 64), "é"} {
		if err := ValidID(bad); !errors.Is(err, ErrInvalidField) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestValidStorePath(t *testing.T) {
	for _, ok := range []string{tl1, tl2, "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-a+b=c?d_e.f-1"} {
		if err := ValidStorePath(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{
		"", "/nix/store/", "/tmp/0123456789abcdfghijklmnpqrsvwxyz-x",
		"/nix/store/0123456789abcdfghijklmnpqrsvwxye-x", // 'e' is not nix-base32
		"/nix/store/0123456789abcdfghijklmnpqrsvwxyz",
		"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-",
		"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-.hidden",
		"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-a/bin/sh",
		"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-a b",
		"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-a;b",
		"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-" + strings.Repeat("a", 212),
		"//nix/store/0123456789abcdfghijklmnpqrsvwxyz-a",
	} {
		if err := ValidStorePath(bad); !errors.Is(err, ErrInvalidField) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestKeys(t *testing.T) {
	k, err := GenerateKey("op-1")
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParsePrivateKey(k.String())
	if err != nil || !k2.Key.Equal(k.Key) {
		t.Fatalf("private round trip: %v", err)
	}
	kr, err := NewKeyring(k.Public().String())
	if err != nil || len(kr) != 1 {
		t.Fatalf("keyring: %v", err)
	}
	for _, bad := range []string{"", "nocolon", "op 1:AAAA", "op:notbase64!", "op:AAAA"} {
		if _, err := ParsePublicKey(bad); !errors.Is(err, ErrInvalidField) {
			t.Errorf("ParsePublicKey(%q) = %v", bad, err)
		}
	}
}
