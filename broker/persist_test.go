package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
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
	// It says the directory is in use and, on Linux, by whom (the lock is
	// bbolt's flock, which conflicts within one process too).
	var inUse *DataDirInUseError
	if !errors.Is(err, ErrDataDirInUse) || !errors.As(err, &inUse) || inUse.Dir != dir {
		t.Fatalf("error %q: want a *DataDirInUseError for %s", err, dir)
	}
	if strings.Contains(err.Error(), "timeout") || strings.Contains(err.Error(), "failed initialising") {
		t.Errorf("error %q: mochi's and bbolt's words leak through", err)
	}
	if runtime.GOOS == "linux" {
		if want := fmt.Sprintf("data directory %s is in use by another %s (PID %d)", dir, inUse.Name, os.Getpid()); inUse.Name == "" || !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
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

// TestStoreReadsMochiBoltFiles: a broker.db written by mochi's own bolt hook
// (what lab used before its group-committing store) loads: the retained
// message comes back, a live session's subscription is restored and one
// left behind by a session that no longer exists is not.
func TestStoreReadsMochiBoltFiles(t *testing.T) {
	dir := t.TempDir()
	old := new(bolt.Hook)
	old.SetOpts(slog.Default(), nil)
	if err := old.Init(&bolt.Options{Path: filepath.Join(dir, StoreFile)}); err != nil {
		t.Fatal(err)
	}
	srv := mqtt.New(nil)
	live := srv.NewClient(nil, "tcp", "node1", false)
	live.Properties.Props.SessionExpiryInterval = 3600
	gone := srv.NewClient(nil, "tcp", "labctl-gone", false)
	old.OnSessionEstablished(live, packets.Packet{})
	sub := func(cl *mqtt.Client, filter string) {
		old.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: filter, Qos: 1}}}, []byte{1})
	}
	sub(live, "lab/v1/node/node1/cmd")
	sub(gone, "lab/v1/status/+")
	old.OnRetainMessage(live, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
		TopicName:   "lab/v1/node/node1/desired", Payload: []byte("gen7"), Created: time.Now().Unix(),
	}, 1)
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}

	s := startServer(t, Config{DataDir: dir})
	if _, ok := s.Mochi().Topics.Subscribers("lab/v1/node/node1/cmd").Subscriptions["node1"]; !ok {
		t.Error("node1's subscription was not restored")
	}
	if _, ok := s.Mochi().Topics.Subscribers("lab/v1/status/x").Subscriptions["labctl-gone"]; ok {
		t.Error("the subscription of a session that no longer exists was restored")
	}
	viewer := connect(t, s.Addr(), clientOpts{id: "viewer"})
	viewer.subscribe(t, "lab/v1/node/+/desired")
	viewer.expect(t, "lab/v1/node/node1/desired", "gen7")
}

// TestStoreForgetsExpiredSessions: when a session expires, its record,
// subscriptions and inflight messages leave the store. mochi v2.7.9 removes
// only the session record on expiry (it unsubscribes and clears inflight
// messages for sessions that end with their connection only), so a
// decommissioned node's subscription and queued commands were restored on
// every restart.
func TestStoreForgetsExpiredSessions(t *testing.T) {
	dir := t.TempDir()
	h := newStoreHook()
	h.SetOpts(slog.Default(), nil)
	cfg, err := storeOptions(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Init(cfg); err != nil {
		t.Fatal(err)
	}
	cl := mqtt.New(nil).NewClient(nil, "tcp", "old-node", false)
	sub := packets.Subscription{Filter: "lab/v1/node/old-node/cmd", Qos: 1}
	cl.State.Subscriptions.Add(sub.Filter, sub)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: sub.Filter, PacketID: 9, Payload: []byte("reboot")}
	cl.State.Inflight.Set(pk)
	h.OnSessionEstablished(cl, packets.Packet{})
	h.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{sub}}, []byte{1})
	h.OnQosPublish(cl, pk, time.Now().Unix(), 0)
	h.w.close() // commit, then check the records are there
	h.w = newBatchWriter(h.db, storeBucket, storeMaxPending, h.Log)
	if n := storeKeys(t, h.db, "old-node"); n != 3 {
		t.Fatalf("%d records of old-node stored, want 3 (session, subscription, inflight)", n)
	}
	h.OnClientExpired(cl)
	h.w.close()
	h.w = newBatchWriter(h.db, storeBucket, storeMaxPending, h.Log)
	if n := storeKeys(t, h.db, "old-node"); n != 0 {
		t.Errorf("%d records of the expired session left in the store", n)
	}
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
}

func storeKeys(t *testing.T, db *bbolt.DB, substr string) int {
	t.Helper()
	n := 0
	_ = db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte(storeBucket)).ForEach(func(k, _ []byte) error {
			if strings.Contains(string(k), substr) {
				n++
			}
			return nil
		})
	})
	return n
}

// TestStoreSkipsSessionsThatEndWithTheirConnection: a clean, expiring
// session (labctl, a dashboard) leaves nothing in the store — not its
// session, subscriptions or the messages in flight to it — while a node's
// durable session is stored.
func TestStoreSkipsSessionsThatEndWithTheirConnection(t *testing.T) {
	h := newStoreHook()
	h.SetOpts(slog.Default(), nil)
	cfg, err := storeOptions(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Init(cfg); err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	srv := mqtt.New(nil)
	for _, c := range []struct {
		id     string
		expiry uint32
		want   int
	}{{"labctl-x", 0, 0}, {"node1", 86400, 3}} {
		cl := srv.NewClient(nil, "tcp", c.id, false)
		cl.Properties.ProtocolVersion = 5
		cl.Properties.Props.SessionExpiryInterval = c.expiry
		sub := packets.Subscription{Filter: "lab/v1/node/+/status", Qos: 1}
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "lab/v1/node/n/status", PacketID: 3}
		h.OnSessionEstablished(cl, packets.Packet{})
		h.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{sub}}, []byte{1})
		h.OnQosPublish(cl, pk, time.Now().Unix(), 0)
		h.w.close()
		h.w = newBatchWriter(h.db, storeBucket, storeMaxPending, h.Log)
		if n := storeKeys(t, h.db, c.id); n != c.want {
			t.Errorf("%s (session expiry %d): %d records stored, want %d", c.id, c.expiry, n, c.want)
		}
	}
}
