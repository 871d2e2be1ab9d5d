package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// newStopped creates (without starting) a broker on dir, for restart tests.
func newStopped(t *testing.T, dir string) *Server {
	t.Helper()
	logger, _ := testLogger(t)
	s, err := New(Config{Listen: "127.0.0.1:0", DataDir: dir, Logger: logger})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestPersistenceAcrossRestart: a retained message and a QoS 1 message
// queued for an offline persistent session both survive Close and a new
// broker on the same DataDir.
func TestPersistenceAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	s1 := startServer(t, Config{DataDir: dir})

	node := connect(t, s1.Addr(), clientOpts{id: "node1", persist: true, filter: "lab/v1/node/node1/cmd"})
	var rec recorder
	if _, err := s1.Subscribe("lab/v1/node/node1/cmd", rec.fn); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := s1.Mochi().Topics.Subscribers("lab/v1/node/node1/cmd").Subscriptions["node1"]; !ok {
			return errors.New("node1 not subscribed yet")
		}
		return nil
	})
	if err := s1.Publish("lab/v1/node/node1/cmd", []byte("probe"), false); err != nil {
		t.Fatal(err)
	}
	node.expect(t, "lab/v1/node/node1/cmd", "probe")
	node.disconnect()

	if err := s1.Publish("lab/v1/node/node1/desired", []byte("gen7"), true); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		cl, ok := s1.Mochi().Clients.Get("node1")
		if !ok || !cl.Closed() {
			return errors.New("node1 still connected")
		}
		return nil
	})
	if err := s1.Publish("lab/v1/node/node1/cmd", []byte("reboot"), false); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, StoreFile)); err != nil {
		t.Fatalf("store file: %v", err)
	}

	s2 := newStopped(t, dir)
	if err := s2.Start(); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.snapshot()); n != 2 {
		t.Errorf("old inline subscription saw %d messages, want 2 (probe, reboot)", n)
	}
	subs := s2.Mochi().Topics.Subscribers("lab/v1/node/node1/cmd").Subscriptions
	if _, ok := subs["node1"]; !ok {
		t.Errorf("node1's subscription was not restored")
	}
	if _, ok := subs["inline"]; ok {
		t.Errorf("an inline subscription was restored as a network subscription")
	}

	viewer := connect(t, s2.Addr(), clientOpts{id: "viewer"})
	viewer.subscribe(t, "lab/v1/node/+/desired")
	if pk := viewer.expect(t, "lab/v1/node/node1/desired", "gen7"); !pk.Retain {
		t.Errorf("retained message delivered without the retain flag")
	}

	back := connect(t, s2.Addr(), clientOpts{id: "node1", persist: true})
	select {
	case ca := <-back.connack:
		if !ca.SessionPresent {
			t.Errorf("CONNACK SessionPresent = false, want the restored session")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no CONNACK")
	}
	back.expect(t, "lab/v1/node/node1/cmd", "reboot")
}

// TestStoreLocked: a second broker on a DataDir in use fails with an error
// naming the store, instead of hanging or sharing the file.
func TestStoreLocked(t *testing.T) {
	dir := t.TempDir()
	startServer(t, Config{DataDir: dir})
	logger, _ := testLogger(t)
	s2, err := New(Config{Listen: "127.0.0.1:0", DataDir: dir, Logger: logger})
	if err == nil {
		_ = s2.Close()
		t.Fatal("second broker on the same DataDir: no error")
	}
	want := fmt.Sprintf("open store %s", filepath.Join(dir, StoreFile))
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
}

func TestDataDirIsAFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{DataDir: f})
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "broker.data_dir") {
		t.Fatalf("New with a file as DataDir: %v", err)
	}
}

func TestPacketIDFromKey(t *testing.T) {
	for key, want := range map[string]uint16{
		"IFM_node1:7":        7,
		"IFM_a:b:65535":      65535,
		"IFM_node1:65536":    0,
		"IFM_node1:":         0,
		"IFM_node1":          0,
		"IFM_node1:notanint": 0,
	} {
		if got := packetIDFromKey(key); got != want {
			t.Errorf("packetIDFromKey(%q) = %d, want %d", key, got, want)
		}
	}
}
