package access

import (
	"testing"

	"github.com/lab-fleet/lab/proto"
)

// The ACL hook checks every publish (CanPublish) and every delivery's
// subscription (CanSubscribe): the hot path of the broker's access rules.
//
//	go test ./broker/access -run '^$' -bench . -benchmem -count 6 | benchstat -
func BenchmarkCanPublish(b *testing.B) {
	tb := testTable(b)
	n1, _ := tb.Lookup("n1")
	ops, _ := tb.Lookup("ops")
	for _, c := range []struct {
		name  string
		id    Identity
		topic string
	}{
		{"node-own-status", n1, "lab/v1/node/n1/status"},
		{"node-foreign-status", n1, "lab/v1/node/n2/status"},
		{"controller-desired", ops, "lab/v1/node/n1/desired"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tb.CanPublish(c.id, c.topic)
			}
		})
	}
}

func BenchmarkCanSubscribe(b *testing.B) {
	tb := testTable(b)
	n1, _ := tb.Lookup("n1")
	viewer, _ := tb.Lookup("grafana")
	for _, c := range []struct {
		name   string
		id     Identity
		filter string
	}{
		{"node-gate", n1, "lab/v1/group/web/gate"},
		{"viewer-all-status", viewer, "lab/v1/node/+/status"},
		{"viewer-everything", viewer, "lab/v1/#"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tb.CanSubscribe(c.id, c.filter)
			}
		})
	}
}

// A login: a generated token (SHA-256 digest) against a bcrypt hash of a
// password a person chose, each right and wrong.
//
//	go test ./broker/access -run '^$' -bench Authenticate -benchmem
func BenchmarkAuthenticate(b *testing.B) {
	token := []byte("Yx3oN0c1r7bqk2Pq0kK3kT9uV4e6Jm1a")
	th, _ := HashToken(token)
	bh, _ := HashPassword(token)
	tb, err := New(File{Identities: []Identity{{Name: "tok", Role: RoleNode, PasswordHash: th}, {Name: "bcr", Role: RoleNode, PasswordHash: bh}}}, proto.DefaultTopics)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name, user string
		pass       []byte
	}{{"token-right", "tok", token}, {"token-wrong", "tok", []byte("wrong")}, {"unknown-user", "nobody", token},
		{"bcrypt-right", "bcr", token}, {"bcrypt-wrong", "bcr", []byte("wrong")}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tb.Authenticate(c.user, c.pass)
			}
		})
	}
}
