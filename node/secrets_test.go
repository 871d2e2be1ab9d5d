package node

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/secretbox"
	"github.com/lab-fleet/lab/internal/testbroker"
	"github.com/lab-fleet/lab/node/nixsys/nixsystest"
	"github.com/lab-fleet/lab/proto"
)

func TestPlanSecret(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	dir := "/run/lab-secrets"
	msg := func(v uint64, path string, expires int64) *proto.Secret {
		return &proto.Secret{Node: "n1", Name: "db", Version: v, Path: path, Expires: expires}
	}
	present := secretRecord{Version: 5, Path: dir + "/db", State: proto.SecretPresent}
	removed := secretRecord{Version: 5, Path: dir + "/db", State: proto.SecretPresent, Removed: true}
	failed := secretRecord{Version: 0, State: proto.SecretError, Error: "x"}
	for _, c := range []struct {
		name   string
		rec    secretRecord
		have   bool
		in     secretInput
		exists bool
		want   secretOp
		path   string
		reason string
	}{
		{"first version", secretRecord{}, false, secretInput{msg: msg(1, "", 0)}, false, secretWrite, dir + "/db", ""},
		{"newer version", present, true, secretInput{msg: msg(6, "", 0)}, true, secretWrite, dir + "/db", ""},
		{"same again", present, true, secretInput{msg: msg(5, "", 0)}, true, secretKeep, "", ""},
		{"same, file gone (reboot)", present, true, secretInput{msg: msg(5, "", 0)}, false, secretWrite, dir + "/db", ""},
		{"replay", present, true, secretInput{msg: msg(4, "", 0)}, true, secretReject, "", "replay"},
		{"replay of removed", removed, true, secretInput{msg: msg(5, "", 0)}, false, secretReject, "", "removed"},
		{"older than removed", removed, true, secretInput{msg: msg(3, "", 0)}, false, secretReject, "", "replay"},
		{"newer than removed", removed, true, secretInput{msg: msg(7, "", 0)}, false, secretWrite, dir + "/db", ""},
		{"after a failure", failed, true, secretInput{msg: msg(1, "", 0)}, false, secretWrite, dir + "/db", ""},
		{"own path", secretRecord{}, false, secretInput{msg: msg(1, dir+"/app/db.env", 0)}, false, secretWrite, dir + "/app/db.env", ""},
		{"path outside", secretRecord{}, false, secretInput{msg: msg(1, "/etc/shadow", 0)}, false, secretReject, "", "outside"},
		{"path that only starts like dir", secretRecord{}, false, secretInput{msg: msg(1, dir+"-evil/db", 0)}, false, secretReject, "", "outside"},
		{"the dir itself", secretRecord{}, false, secretInput{msg: msg(1, dir, 0)}, false, secretReject, "", "outside"},
		{"expired", secretRecord{}, false, secretInput{msg: msg(1, "", 999_999)}, false, secretReject, "", "expired"},
		{"not expired", secretRecord{}, false, secretInput{msg: msg(1, "", 1_000_001)}, false, secretWrite, dir + "/db", ""},
		{"bad message", present, true, secretInput{err: errors.New("bad signature")}, true, secretReject, "", "bad signature"},
		{"removed", present, true, secretInput{}, true, secretRemove, dir + "/db", ""},
		{"removed again", removed, true, secretInput{}, false, secretKeep, "", ""},
		{"removed, never had", secretRecord{}, false, secretInput{}, false, secretKeep, "", ""},
	} {
		c.in.name = "db"
		got := planSecret(c.rec, c.have, c.in, c.exists, now, dir)
		if got.op != c.want || got.path != c.path || !strings.Contains(got.reason, c.reason) || (c.reason == "" && got.reason != "") {
			t.Errorf("%s: got %+v, want op %d path %q reason ~%q", c.name, got, c.want, c.path, c.reason)
		}
	}
}

// secretEnv is a real broker, a labd n1 on it and a client that sees
// every message of every topic.
type secretEnv struct {
	t        *testing.T
	br       *testbroker.Broker
	dir      string // secrets.dir
	state    string
	restarts string // the fake restart command appends each unit here
	key      proto.PrivateKey
	logs     *syncBuffer
	mu       sync.Mutex
	seen     [][]byte // every payload on every topic
	statuses chan proto.NodeStatus
	events   chan proto.Event
	stop     func()
	fake     *nixsystest.Fake // labd's Nix (nil: a new one at each start)
	edit     func(*Config)    // changes labd's config at each start (nil: none)
}

func newSecretEnv(t *testing.T) *secretEnv {
	t.Helper()
	return newSecretEnvWith(t, nil, nil)
}

// newSecretEnvWith is newSecretEnv with labd on fake (nil: a new one)
// and edit, if not nil, changing its config first.
func newSecretEnvWith(t *testing.T, fake *nixsystest.Fake, edit func(*Config)) *secretEnv {
	t.Helper()
	key, err := proto.GenerateKey("op")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	e := &secretEnv{t: t, br: testbroker.Start(t), dir: filepath.Join(root, "secrets"), state: filepath.Join(root, "state"),
		restarts: filepath.Join(root, "restarts"), key: key, logs: &syncBuffer{},
		statuses: make(chan proto.NodeStatus, 100), events: make(chan proto.Event, 100), fake: fake, edit: edit}
	listen(t, e.br, "spy", func(m bus.Message) {
		e.mu.Lock()
		e.seen = append(e.seen, append([]byte(m.Topic+" "), m.Payload...))
		e.mu.Unlock()
		var s proto.NodeStatus
		var ev proto.Event
		switch {
		case proto.Decode(m.Payload, &s) == nil:
			e.statuses <- s
		case proto.Decode(m.Payload, &ev) == nil:
			e.events <- ev
		}
	}, "#")
	e.start()
	return e
}

// start runs labd (again) on the same state directory.
func (e *secretEnv) start() {
	t := e.t
	cfg := Config{Name: "n1", Broker: []string{e.br.URL()}, StateDir: e.state, TrustedKeys: []string{e.key.Public().String()},
		BootIDFile: filepath.Join(e.state, "..", "boot_id"), Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Secrets: SecretsConfig{Dir: e.dir, IdentityFile: filepath.Join(e.state, "..", "no-ssh-key"),
			RestartCommand: []string{"sh", "-c", `echo "$0" >> ` + e.restarts}}}
	fake := e.fake
	if fake == nil {
		fake = nixsystest.New()
		fake.SetCurrent(tlOld)
	}
	if e.edit != nil {
		e.edit(&cfg)
	}
	d, err := New(cfg, fake)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	var once sync.Once
	e.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(e.stop)
	// Wait until labd has subscribed to its secrets and the broker has sent
	// it the retained ones: mochi v2.7.9 reads a topic's retained path
	// without a lock while it sends retained messages to a new
	// subscription, so a retained publish at that moment is a data race
	// in the broker (seen under -race), not in labd.
	filter := proto.DefaultTopics.NodeSecret("n1", "+")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if cl, ok := e.br.Server.Clients.Get("n1"); ok {
			if _, subscribed := cl.State.Subscriptions.Get(filter); subscribed {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("labd did not subscribe to %s", filter)
		}
	}
	time.Sleep(200 * time.Millisecond)
}

// status waits for a status that ok accepts.
func (e *secretEnv) status(what string, ok func(proto.NodeStatus) bool) proto.NodeStatus {
	e.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case s := <-e.statuses:
			if ok(s) {
				return s
			}
		case <-deadline:
			e.t.Fatalf("no status with %s within 5s", what)
		}
	}
}

func (e *secretEnv) recipient() string {
	return e.status("a recipient", func(s proto.NodeStatus) bool { return s.Recipient != "" }).Recipient
}

// rejected waits for a rejected event whose detail contains want.
func (e *secretEnv) rejected(want string) {
	e.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-e.events:
			if ev.State == proto.StateRejected && strings.Contains(ev.Detail, want) {
				return
			}
		case <-deadline:
			e.t.Fatalf("no rejected event saying %q within 5s", want)
		}
	}
}

func (e *secretEnv) publish(s *proto.Secret, key *proto.PrivateKey) {
	e.t.Helper()
	s.Stamp("test", time.Now())
	if key != nil {
		if err := proto.Sign(s, *key); err != nil {
			e.t.Fatal(err)
		}
	}
	b, err := proto.Seal(s)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.br.Server.Publish(proto.DefaultTopics.NodeSecret(s.Node, s.Name), b, true, 1); err != nil {
		e.t.Fatal(err)
	}
}

func (e *secretEnv) secret(version uint64, content, recipient string) *proto.Secret {
	e.t.Helper()
	ct, err := secretbox.Encrypt([]byte(content), recipient)
	if err != nil {
		e.t.Fatal(err)
	}
	return &proto.Secret{Node: "n1", Name: "db", Version: version, Ciphertext: ct, Mode: 0o440, Restart: []string{"app.service"}}
}

func (e *secretEnv) awaitFile(path, content string) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && string(b) == content {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s holds %q (%v), want %q", path, b, err, content)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *secretEnv) mustHold(path, content string) {
	e.t.Helper()
	if b, err := os.ReadFile(path); err != nil || string(b) != content {
		e.t.Fatalf("%s holds %q (%v), want it left as %q", path, b, err, content)
	}
}

// The whole path on a real broker and a real labd: a secret reaches its
// file with its mode, a newer version replaces it, every bad one is
// refused and leaves the file alone, a restart of labd does not forget
// the versions, removing it removes the file; and no plaintext is ever
// on a topic or in labd's logs.
func TestSecretsOnTheWire(t *testing.T) {
	e := newSecretEnv(t)
	rcpt := e.recipient()
	if !strings.HasPrefix(rcpt, "age1") {
		t.Fatalf("recipient %q: want an age identity (no SSH host key)", rcpt)
	}
	if fi, err := os.Stat(filepath.Join(e.state, secretbox.AgeIdentityFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("age identity: %v, %v", fi, err)
	}
	path := filepath.Join(e.dir, "db")
	plain := []string{"first-plaintext-7c1e", "second-plaintext-93ab"}

	e.publish(e.secret(100, plain[0], rcpt), &e.key)
	e.awaitFile(path, plain[0])
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o440 {
		t.Errorf("mode %v, want 0440", fi.Mode().Perm())
	}
	e.status("db v100 present", func(s proto.NodeStatus) bool {
		return len(s.Secrets) == 1 && s.Secrets[0].Version == 100 && s.Secrets[0].State == proto.SecretPresent && s.Secrets[0].Path == path
	})
	if b, _ := os.ReadFile(e.restarts); string(b) != "app.service\n" {
		t.Errorf("restarts: %q, want app.service once", b)
	}

	e.publish(e.secret(200, plain[1], rcpt), &e.key)
	e.awaitFile(path, plain[1])

	// Each of these is refused and leaves version 200 in place.
	other, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := proto.GenerateKey("stranger")
	outside := filepath.Join(filepath.Dir(e.dir), "outside")
	for _, c := range []struct {
		name   string
		s      *proto.Secret
		key    *proto.PrivateKey
		reason string
	}{
		{"replayed", e.secret(100, "replayed-plaintext", rcpt), &e.key, "replay"},
		{"unsigned", e.secret(300, "unsigned-plaintext", rcpt), nil, proto.ErrUnsigned.Error()},
		{"untrusted key", e.secret(300, "stranger-plaintext", rcpt), &stranger, proto.ErrUnknownKey.Error()},
		{"other recipient", e.secret(300, "elsewhere-plaintext", other.Recipient().String()), &e.key, "not encrypted to this machine"},
		{"path outside", func() *proto.Secret { s := e.secret(300, "outside-plaintext", rcpt); s.Path = outside; return s }(), &e.key, "outside"},
	} {
		e.publish(c.s, c.key)
		e.rejected(c.reason)
		e.mustHold(path, plain[1])
		if _, err := os.Stat(outside); err == nil {
			t.Fatalf("%s: wrote %s", c.name, outside)
		}
	}
	e.status("the last refusal reported, v200 still present", func(s proto.NodeStatus) bool {
		return len(s.Secrets) == 1 && s.Secrets[0].Version == 200 && s.Secrets[0].State == proto.SecretPresent && strings.Contains(s.Secrets[0].Error, "outside")
	})

	// After a restart of labd the versions are remembered.
	e.stop()
	e.start()
	e.publish(e.secret(150, "after-restart-plaintext", rcpt), &e.key)
	e.rejected("replay")
	e.mustHold(path, plain[1])

	// Removed: an empty retained payload.
	if err := e.br.Server.Publish(proto.DefaultTopics.NodeSecret("n1", "db"), nil, true, 1); err != nil {
		t.Fatal(err)
	}
	e.status("db gone", func(s proto.NodeStatus) bool { return len(s.Secrets) == 0 && s.Recipient == rcpt })
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s after removal: %v", path, err)
	}
	e.stop()

	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range append(plain, "replayed-plaintext", "unsigned-plaintext", "stranger-plaintext", "elsewhere-plaintext", "outside-plaintext", "after-restart-plaintext") {
		for _, m := range e.seen {
			if bytes.Contains(m, []byte(p)) {
				t.Errorf("plaintext %q on the wire: %.80q", p, m)
			}
		}
		if strings.Contains(e.logs.String(), p) {
			t.Errorf("plaintext %q in labd's log", p)
		}
	}
	if len(e.seen) < 10 {
		t.Errorf("the spy saw %d messages: it did not watch", len(e.seen))
	}
}

// A labd whose SSH host key is readable reports it as its recipient and
// decrypts with it.
func TestSecretsIdentityFromSSHHostKey(t *testing.T) {
	dir := t.TempDir()
	// An OpenSSH ed25519 private key (test only).
	keyFile := filepath.Join(dir, "ssh_host_ed25519_key")
	if err := os.WriteFile(keyFile, []byte(testSSHKey), 0o600); err != nil {
		t.Fatal(err)
	}
	id, warn, err := secretbox.Load(keyFile, dir)
	if err != nil || warn != "" {
		t.Fatalf("Load: %v %q", err, warn)
	}
	if id.Recipient != testSSHPub {
		t.Fatalf("recipient %q, want %q", id.Recipient, testSSHPub)
	}
	ct, err := secretbox.Encrypt([]byte("hello"), testSSHPub+" root@host")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := secretbox.Decrypt(ct, id, 100); err != nil || string(b) != "hello" {
		t.Fatalf("Decrypt = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, secretbox.AgeIdentityFile)); err == nil {
		t.Error("an age identity was created although the SSH key was usable")
	}
	// An RSA key (or anything else) is not used: an age identity is.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	id, warn, err = secretbox.Load(keyFile, dir)
	if err != nil || warn == "" || !strings.HasPrefix(id.Recipient, "age1") {
		t.Fatalf("Load of a broken key: %+v %q %v", id.Recipient, warn, err)
	}
	again, _, err := secretbox.Load(filepath.Join(dir, "missing"), dir)
	if err != nil || again.Recipient != id.Recipient {
		t.Fatalf("the age identity changed: %q then %q (%v)", id.Recipient, again.Recipient, err)
	}
}

const testSSHKey = `-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAIfz8XjpmKDUms3uO/zC3Y/XSITzSHc7x0TvD/QgKkvQAAAIiJ3JdNidyX
TQAAAAtzc2gtZWQyNTUxOQAAACAIfz8XjpmKDUms3uO/zC3Y/XSITzSHc7x0TvD/QgKkvQ
AAAECBMGLtWhj4iLSSgrdJjkchhYjHOVa7DvgGfmsswvlakQh/PxeOmYoNSaze47/MLdj9
dIhPNIdzvHRO8P9CAqS9AAAAAAECAwQF
-----END OPENSSH PRIVATE KEY-----
`

const testSSHPub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAh/PxeOmYoNSaze47/MLdj9dIhPNIdzvHRO8P9CAqS9"

// checkSecret takes only a secret for this node and name, signed by a
// pinned operator key; a node that pins no key takes none, a controller
// key is not enough.
func TestCheckSecret(t *testing.T) {
	op, _ := proto.GenerateKey("op")
	ctl, _ := proto.GenerateKey("ctl")
	seal := func(node, name string, key *proto.PrivateKey) []byte {
		s := &proto.Secret{Node: node, Name: name, Version: 1, Ciphertext: []byte("x")}
		s.Stamp("t", time.Now())
		if key != nil {
			if err := proto.Sign(s, *key); err != nil {
				t.Fatal(err)
			}
		}
		b, err := proto.Seal(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pinned := &Daemon{cfg: Config{Name: "n1"}, keys: newPins([]string{op.Public().String()}, []string{ctl.Public().String()})}
	none := &Daemon{cfg: Config{Name: "n1"}, keys: newPins(nil, nil)}
	for _, c := range []struct {
		name    string
		d       *Daemon
		payload []byte
		want    string // "" = accepted
	}{
		{"good", pinned, seal("n1", "db", &op), ""},
		{"another node's", pinned, seal("n2", "db", &op), `addressed to node "n2"`},
		{"another name's", pinned, seal("n1", "other", &op), `names secret "other"`},
		{"unsigned", pinned, seal("n1", "db", nil), "not signed"},
		{"controller key", pinned, seal("n1", "db", &ctl), "unknown key"},
		{"no key pinned, unsigned", none, seal("n1", "db", nil), "no operator key pinned"},
		{"no key pinned, signed", none, seal("n1", "db", &op), "no operator key pinned"},
		{"garbage", pinned, []byte{0x80}, "unknown schema version"},
	} {
		err := c.d.checkSecret(c.payload, new(proto.Secret), "db")
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}
