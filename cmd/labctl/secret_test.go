package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/node"
	"github.com/lab-fleet/lab/node/nixsys/nixsystest"
	"github.com/lab-fleet/lab/proto"
)

// TestSecretCommands: on the embedded broker with identities and a real
// labd, labctl secret recipients lists the machine's recipient, set puts
// the file in place with its mode (and refuses, by name, a target that
// reports no recipient), list shows its state, rm removes it; the
// plaintext is on no topic a controller can read and nowhere in the
// broker's data directory; another node may not subscribe to the
// machine's secrets.
func TestSecretCommands(t *testing.T) {
	clearBrokerEnv(t)
	dir := t.TempDir()
	ids := addIdentities(t, dir, "n1=node", "n2=node", "ops=controller")
	keyFile := filepath.Join(dir, "operator.key")
	code, pub, errOut := labctl(t, "key", "generate", "--id", "op", "--out", keyFile)
	if code != 0 {
		t.Fatalf("key generate: %d %s", code, errOut)
	}
	var out, bout syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	data := filepath.Join(dir, "broker-data")
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"broker", "--listen", "127.0.0.1:0", "--data-dir", data, "--identities", ids, "--http", ""}, &out, &bout)
	}()
	stopBroker := func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("broker did not stop")
		}
	}
	defer func() {
		if ctx.Err() == nil {
			stopBroker()
		}
	}()
	url := "mqtt://" + awaitListening(t, bout.String)
	tp := proto.DefaultTopics

	// A real labd n1.
	secrets := filepath.Join(dir, "secrets")
	var logs syncBuffer
	fake := nixsystest.New()
	d, err := node.New(node.Config{Name: "n1", Broker: []string{url}, PasswordFile: filepath.Join(dir, "n1.password"),
		StateDir: filepath.Join(dir, "n1-state"), BootIDFile: filepath.Join(dir, "boot_id"), TrustedKeys: []string{strings.TrimSpace(pub)},
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Secrets: node.SecretsConfig{Dir: secrets, IdentityFile: filepath.Join(dir, "none"), RestartCommand: []string{"true"}}}, fake)
	if err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithCancel(ctx)
	ddone := make(chan struct{})
	go func() { _ = d.Run(dctx); close(ddone) }()
	defer func() { dcancel(); <-ddone }()

	// A controller identity watching all of lab/v1/node/.
	var seenMu sync.Mutex
	var seen [][]byte
	spy, err := bus.Dial(ctx, bus.Config{URLs: []string{url}, ClientID: "ops-spy", Username: "ops", Password: []byte(readPassword(t, dir, "ops")), CleanStart: true,
		OnMessage: func(m bus.Message) { seenMu.Lock(); seen = append(seen, m.Payload); seenMu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close(context.Background())
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := spy.AwaitConnection(wctx); err != nil {
		t.Fatal(err)
	}
	if err := spy.Subscribe(wctx, "lab/v1/node/#"); err != nil {
		t.Fatal(err)
	}
	ops := []string{"--broker", url, "--username", "ops", "--password-file", filepath.Join(dir, "ops.password")}

	var rcpt string
	deadline := time.Now().Add(5 * time.Second)
	for rcpt == "" && time.Now().Before(deadline) {
		code, o, e := labctl(t, append([]string{"secret", "recipients", "--json"}, ops...)...)
		var rows []recipientLine
		if err := json.Unmarshal([]byte(o), &rows); code != 0 || err != nil {
			t.Fatalf("recipients: %d %v\n%s%s", code, err, o, e)
		}
		if len(rows) == 1 && rows[0].Node == "n1" {
			rcpt = rows[0].Recipient
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.HasPrefix(rcpt, "age1") {
		t.Fatalf("recipient of n1: %q", rcpt)
	}

	plain := "s3cret-plaintext-5d2f9"
	content := filepath.Join(dir, "pw")
	if err := os.WriteFile(content, []byte(plain), 0o600); err != nil {
		t.Fatal(err)
	}
	// n2 has never reported: refused by name, nothing published.
	code, o, e := labctl(t, append([]string{"secret", "set", "n1,n2", "db", "--file", content, "--key", keyFile}, ops...)...)
	if code != 1 || !strings.Contains(e, "no recipient reported by n2") || strings.Contains(o, "published") {
		t.Fatalf("set to n1,n2: exit %d\n%s%s", code, o, e)
	}
	code, o, e = labctl(t, append([]string{"secret", "set", "@nobody", "db", "--file", content, "--key", keyFile}, ops...)...)
	if code != 1 || !strings.Contains(e, "@nobody: no node has reported membership of this group") {
		t.Fatalf("set to an empty group: exit %d\n%s%s", code, o, e)
	}
	// Usage errors.
	for _, args := range [][]string{
		{"secret", "set", "n1", "db", "--file", content},                                  // no --key
		{"secret", "set", "n1", "db", "--key", keyFile},                                   // no --file
		{"secret", "set", "n1", "DB", "--file", content, "--key", keyFile},                // bad name
		{"secret", "set", "n1", "db", "--file", content, "--key", keyFile, "--mode", "9"}, // not octal
		{"secret", "set", "n1", "db", "--file", content, "--key", keyFile, "--restart", "--now"},
		{"secret", "set", "n1", "db", "--file", content, "--key", keyFile, "--path", "relative"},
	} {
		if code, _, e := labctl(t, append(args, ops...)...); code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s", args, code, e)
		}
	}
	code, o, e = labctl(t, append([]string{"secret", "set", "n1", "db", "--file", content, "--key", keyFile, "--mode", "0440", "--restart", "app.service"}, ops...)...)
	if code != 0 || !strings.Contains(o, "n1: secret db version") {
		t.Fatalf("set: exit %d\n%s%s", code, o, e)
	}
	path := filepath.Join(secrets, "db")
	awaitFileContent(t, path, plain)
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o440 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	var rows []secretLine
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		code, o, e = labctl(t, append([]string{"secret", "list", "--json", "--on", "n1"}, ops...)...)
		if err := json.Unmarshal([]byte(o), &rows); code != 0 || err != nil {
			t.Fatalf("list: %d %v\n%s%s", code, err, o, e)
		}
		if len(rows) == 1 && rows[0].State == proto.SecretPresent {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(rows) != 1 || rows[0].Node != "n1" || rows[0].Name != "db" || rows[0].State != proto.SecretPresent || rows[0].Path != path {
		t.Fatalf("list: %+v", rows)
	}

	// n2 may not read n1's secrets.
	n2, err := bus.Dial(ctx, bus.Config{URLs: []string{url}, ClientID: "n2", Username: "n2", Password: []byte(readPassword(t, dir, "n2")), CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close(context.Background())
	if err := n2.AwaitConnection(wctx); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{tp.NodeSecret("n1", "db"), tp.NodeSecrets("n1"), tp.AllSecrets()} {
		if err := n2.Subscribe(wctx, f); err == nil {
			t.Errorf("node n2 subscribed to %s", f)
		}
	}
	if err := n2.Subscribe(wctx, tp.NodeSecrets("n2")); err != nil {
		t.Errorf("node n2 may not subscribe to its own secrets: %v", err)
	}

	code, o, e = labctl(t, append([]string{"secret", "rm", "n1", "db"}, ops...)...)
	if code != 0 || !strings.Contains(o, "n1: secret db removed") {
		t.Fatalf("rm: exit %d\n%s%s", code, o, e)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there after rm", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Set again, so that the broker holds a retained secret when it stops.
	if code, o, e := labctl(t, append([]string{"secret", "set", "n1", "db", "--file", content, "--key", keyFile}, ops...)...); code != 0 {
		t.Fatalf("set again: exit %d\n%s%s", code, o, e)
	}
	awaitFileContent(t, path, plain)
	dcancel()
	<-ddone
	stopBroker()

	seenMu.Lock()
	defer seenMu.Unlock()
	ciphertexts := 0
	for _, m := range seen {
		if bytes.Contains(m, []byte(plain)) {
			t.Errorf("plaintext on a topic: %.80q", m)
		}
		if bytes.Contains(m, []byte("age-encryption.org/v1")) {
			ciphertexts++
		}
	}
	if ciphertexts < 2 {
		t.Errorf("the controller saw %d secrets: it did not watch", ciphertexts)
	}
	if strings.Contains(logs.String(), plain) || strings.Contains(bout.String(), plain) {
		t.Error("plaintext in a log")
	}
	files := 0
	_ = filepath.WalkDir(data, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return nil
		}
		files++
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(plain)) {
			t.Errorf("plaintext in the broker's data directory: %s", p)
		}
		return nil
	})
	if files == 0 {
		t.Error("the broker's data directory is empty: nothing was checked")
	}
}

func awaitFileContent(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && string(b) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
