package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"go.etcd.io/bbolt"
)

// errWriterClosed is returned for a write handed to a closed batchWriter.
var errWriterClosed = errors.New("store closed")

// batchWriter applies puts and deletes to one bbolt bucket in group commits:
// a caller hands over a key and its encoded value (or a delete) and returns
// at once; one goroutine commits everything handed over since its last
// commit in a single transaction. A later write to a key replaces an earlier
// one that is not committed yet, so a retained status rewritten five times in
// one rollout costs one write, not five transactions.
//
// While a commit runs, new writes collect for the next one: the batch grows
// with the load and no timer delays a quiet broker. When maxPending keys are
// waiting, writers block until the next commit takes them (backpressure
// instead of unbounded memory on a slow disk).
type batchWriter struct {
	db         *bbolt.DB
	bucket     []byte
	log        *slog.Logger
	maxPending int

	mu      sync.Mutex
	pending map[string]op
	taken   *sync.Cond // a commit took the pending writes, or the writer closed
	closed  bool
	commits int // transactions committed (tests)
	wake    chan struct{}
	done    chan struct{}
}

// op is one pending write: a value to put, or a delete.
type op struct {
	value []byte
	del   bool
}

func newBatchWriter(db *bbolt.DB, bucket string, maxPending int, log *slog.Logger) *batchWriter {
	b := &batchWriter{db: db, bucket: []byte(bucket), log: log, maxPending: maxPending,
		pending: map[string]op{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	b.taken = sync.NewCond(&b.mu)
	go b.run()
	return b
}

// put stores value under key in a coming commit.
func (b *batchWriter) put(key string, value []byte) error { return b.write(key, op{value: value}) }

// del deletes key in a coming commit.
func (b *batchWriter) del(key string) error { return b.write(key, op{del: true}) }

func (b *batchWriter) write(key string, o op) error {
	b.mu.Lock()
	for len(b.pending) >= b.maxPending && !b.closed {
		if _, replaces := b.pending[key]; replaces {
			break
		}
		b.taken.Wait()
	}
	if b.closed {
		b.mu.Unlock()
		return errWriterClosed
	}
	b.pending[key] = o
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return nil
}

// close commits what is pending and stops the writer; later writes fail.
func (b *batchWriter) close() {
	b.mu.Lock()
	b.closed = true
	b.taken.Broadcast()
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	<-b.done
}

func (b *batchWriter) run() {
	defer close(b.done)
	for range b.wake {
		b.mu.Lock()
		var batch map[string]op
		if len(b.pending) > 0 {
			batch, b.pending = b.pending, make(map[string]op, len(b.pending))
		}
		closed := b.closed
		b.taken.Broadcast()
		b.mu.Unlock()
		if batch != nil {
			if err := b.commit(batch); err != nil {
				b.log.Error("store: writes lost", "writes", len(batch), "err", err)
			}
		}
		if closed {
			return
		}
	}
}

// commit applies batch in one transaction, keys in order (bbolt appends
// sorted keys to its pages with the fewest splits).
func (b *batchWriter) commit(batch map[string]op) error {
	keys := make([]string, 0, len(batch))
	for k := range batch {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	err := b.db.Update(func(tx *bbolt.Tx) error {
		bucket := tx.Bucket(b.bucket)
		if bucket == nil {
			return fmt.Errorf("bucket %q missing", b.bucket)
		}
		for _, k := range keys {
			o := batch[k]
			var err error
			if o.del {
				err = bucket.Delete([]byte(k))
			} else {
				err = bucket.Put([]byte(k), o.value)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
		return nil
	})
	b.mu.Lock()
	b.commits++
	b.mu.Unlock()
	return err
}
