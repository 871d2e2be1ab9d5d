package broker

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"

	"go.etcd.io/bbolt"
)

func openTestDB(t *testing.T) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "t.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucket([]byte("b"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return db
}

func contents(t *testing.T, db *bbolt.DB) map[string]string {
	t.Helper()
	m := map[string]string{}
	if err := db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("b")).ForEach(func(k, v []byte) error {
			m[string(k)] = string(v)
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestBatchWriterLastWriteWins: puts and deletes from many goroutines land
// as the last write to each key, all of them once close returns, in fewer
// transactions than writes.
func TestBatchWriterLastWriteWins(t *testing.T) {
	db := openTestDB(t)
	w := newBatchWriter(db, "b", 1<<16, slog.Default())
	const writers, keys, rounds = 8, 50, 20
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				for k := range keys {
					key := fmt.Sprintf("w%d-k%02d", g, k)
					if r == rounds-1 && k%5 == 0 {
						_ = w.del(key)
						continue
					}
					if err := w.put(key, []byte(fmt.Sprint(r))); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	w.close()
	got := contents(t, db)
	for g := range writers {
		for k := range keys {
			key := fmt.Sprintf("w%d-k%02d", g, k)
			v, ok := got[key]
			switch {
			case k%5 == 0 && ok:
				t.Errorf("%s = %q, want deleted", key, v)
			case k%5 != 0 && v != fmt.Sprint(rounds-1):
				t.Errorf("%s = %q (present %v), want %d", key, v, ok, rounds-1)
			}
		}
	}
	writes := writers * keys * rounds
	if w.commits >= writes {
		t.Errorf("%d commits for %d writes: no grouping", w.commits, writes)
	}
	t.Logf("%d writes in %d commits", writes, w.commits)
	if err := w.put("late", []byte("x")); err != errWriterClosed {
		t.Errorf("put after close: %v, want errWriterClosed", err)
	}
}

// TestBatchWriterBackpressure: with maxPending 1 every write still lands.
func TestBatchWriterBackpressure(t *testing.T) {
	db := openTestDB(t)
	w := newBatchWriter(db, "b", 1, slog.Default())
	for i := range 200 {
		if err := w.put(fmt.Sprintf("k%03d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	w.close()
	if n := len(contents(t, db)); n != 200 {
		t.Fatalf("%d keys stored, want 200", n)
	}
}

// TestBatchWriterCloseUnblocksWriters: a writer waiting for room is
// released by close with errWriterClosed, not left hanging.
func TestBatchWriterCloseUnblocksWriters(t *testing.T) {
	db := openTestDB(t)
	// Hold bbolt's writer lock so that no commit can take the pending write.
	tx, err := db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	w := newBatchWriter(db, "b", 1, slog.Default())
	_ = w.put("a", []byte("1"))
	errs := make(chan error, 3)
	for i := range 3 {
		go func() { errs <- w.put(fmt.Sprintf("b%d", i), []byte("2")) }()
	}
	closed := make(chan struct{})
	go func() { w.close(); close(closed) }()
	_ = tx.Rollback()
	<-closed
	for range 3 {
		if err := <-errs; err != nil && err != errWriterClosed {
			t.Errorf("blocked put: %v", err)
		}
	}
}
