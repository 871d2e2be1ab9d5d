package access

import (
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"

	"golang.org/x/crypto/pbkdf2"
)

// MosquittoACL renders the same rules as a mosquitto acl_file: per-user
// topic lines for controllers, viewers and each node's groups, and
// pattern lines (%u = the username, or the certificate CN with
// use_identity_as_username) for every node's own topics. Anything not
// listed is denied.
//
// mosquitto applies pattern lines to every user, whatever user line comes
// before them; so a controller's own responses (<p>/ctl/res/<name>/#) are
// a topic line under its user line, not a pattern, which would let nodes
// and viewers read <p>/ctl/res/<their name>/# too.
func (t *Table) MosquittoACL() string {
	tp := t.topics
	var b strings.Builder
	b.WriteString("# lab access rules for mosquitto, written by `labctl acl export --format mosquitto`.\n")
	b.WriteString("# Everything not listed is denied. A `topic` line belongs to the `user` line above it.\n")
	names := make([]string, 0, len(t.byName))
	for n := range t.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	section := func(role Role, title string, lines func(Identity) []string) {
		fmt.Fprintf(&b, "\n# %s\n", title)
		for _, n := range names {
			id := t.byName[n]
			if id.Role != role {
				continue
			}
			fmt.Fprintf(&b, "user %s\n", id.Name)
			for _, l := range lines(id) {
				fmt.Fprintf(&b, "%s\n", l)
			}
		}
	}
	section(RoleController, "controllers: publish desired state, secrets, gates, commands, rollouts, requests and answers, Home Assistant's discovery; read all of lab but others' answers", func(id Identity) []string {
		var out []string
		for _, p := range t.publishes(id) {
			out = append(out, "topic write "+p)
		}
		for _, p := range t.reads(id) {
			out = append(out, "topic read "+p)
		}
		return out
	})
	section(RoleViewer, "viewers: read status, presence, rollouts, the JSON mirror, Home Assistant's discovery; publish Home Assistant's birth", func(id Identity) []string {
		var out []string
		for _, p := range t.publishes(id) {
			out = append(out, "topic write "+p)
		}
		for _, p := range t.reads(id) {
			out = append(out, "topic read "+p)
		}
		return out
	})
	section(RoleNode, "nodes: their groups' gates and commands, and commands to all", func(id Identity) []string {
		out := []string{"topic read " + tp.AllCmd()}
		for _, g := range id.Groups {
			out = append(out, "topic read "+tp.GroupGate(g), "topic read "+tp.GroupCmd(g))
		}
		return out
	})
	b.WriteString("\n# every node: its own desired state, commands and secrets, and its own status, presence, events (and it reads its own presence)\n")
	for _, l := range []string{
		"pattern read " + tp.NodeDesired("%u"), "pattern read " + tp.NodeCmd("%u"), "pattern read " + tp.NodePresence("%u"),
		"pattern read " + tp.NodeSecrets("%u"),
		"pattern write " + tp.NodeStatus("%u"), "pattern write " + tp.NodePresence("%u"), "pattern write " + tp.NodeEvents("%u"),
	} {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// MosquittoPassword returns a mosquitto password_file line (the $7$
// PBKDF2-SHA512 format of mosquitto_passwd, 101 iterations).
func MosquittoPassword(user string, password []byte) (string, error) {
	salt := make([]byte, 12)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	h := pbkdf2.Key(password, salt, 101, sha512.Size, sha512.New)
	return fmt.Sprintf("%s:$7$101$%s$%s", user, base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(h)), nil
}
