package controller

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/lab-fleet/lab/proto"
	bolt "go.etcd.io/bbolt"
)

// Record is everything needed to show a rollout later and to resume it:
// the plan, the waves, which targets a gate opens, the gens published and
// how far it got. It is saved at every step of a run.
type Record struct {
	Plan     Plan              `json:"plan"`
	Waves    [][]string        `json:"waves"`
	Gates    []string          `json:"gates,omitempty"` // groups whose gates open the gated targets
	Gated    []string          `json:"gated,omitempty"`
	Gens     map[string]uint64 `json:"gens"`
	Opened   int               `json:"opened"` // waves opened
	OpenedAt time.Time         `json:"opened_at"`
	Created  time.Time         `json:"created"`
	Updated  time.Time         `json:"updated"`
	// State is running while a controller follows the rollout (or was
	// stopped before the end: resume continues it), then its outcome:
	// pending (followed to the end with targets still to converge: resume
	// and cancel still apply), succeeded, rolled-back, failed, cancelled.
	State  proto.RolloutPhase `json:"state"`
	Reason string             `json:"reason,omitempty"`
	// KeyID names the operator key that signed the rollout's Desired
	// states (empty: unsigned). Resuming or cancelling needs a key too:
	// nodes that pin keys reject unsigned gates and commands.
	KeyID  string  `json:"key_id,omitempty"`
	Result *Result `json:"result,omitempty"` // as last seen
	// Submitter is who submitted the rollout to a controller service
	// (its MQTT identity, or the name in the request); empty for a
	// rollout labctl drove itself.
	Submitter string `json:"submitter,omitempty"`
	// Signed and Rollback are the sealed Desired states the operator
	// signed for a submitted rollout (by node), and the signed way back
	// of each target for --on-failure rollback: the controller service
	// publishes them as they are. BoltStore keeps them apart from the
	// record (written once, by Create; read back by Get).
	// Paused names who paused the rollout (no further wave opens until
	// it is resumed); empty when it is not paused.
	Paused string `json:"paused,omitempty"`
	// RollingBack says that the rollout halted and its way back
	// (--on-failure rollback) is under way: Result.Rollback holds its
	// result once it is over and this is false again.
	RollingBack bool              `json:"rolling_back,omitempty"`
	Signed      map[string][]byte `json:"-"`
	Rollback    map[string][]byte `json:"-"`
}

// Done reports whether the rollout is over: nothing of it can still
// happen. A pending rollout is not done.
func (r *Record) Done() bool { return r.State.Terminal() }

// CanContinue says why the rollout cannot be resumed or cancelled: it is
// over, or it was signed and no key is given (what would be published
// unsigned, nodes that pin keys reject). Callers check it before
// connecting; Resume and Cancel check it again.
func (r *Record) CanContinue(haveKey bool) error {
	if r.Done() {
		return fmt.Errorf("rollout %s already ended (%s): %w", r.Plan.ID, r.State, ErrRolloutEnded)
	}
	if r.KeyID != "" && !haveKey {
		return fieldErr(FieldKey, "%w: rollout %s was signed with key %q; nodes that pin keys reject unsigned gates and commands", ErrKeyNeeded, r.Plan.ID, r.KeyID)
	}
	return nil
}

// Followed reports whether a controller followed the rollout to its end
// (pending included): its result is an outcome, not a snapshot.
func (r *Record) Followed() bool { return r.State != proto.RolloutRunning && r.State != "" }

// halted reports whether the rollout stopped opening waves early.
func (r *Record) halted() bool {
	return r.State == proto.RolloutHalted || r.State == proto.RolloutCancelled || (r.Result != nil && r.Result.Halted)
}

// Store keeps rollout records.
type Store interface {
	// Create saves the first record of a rollout; a record of that id
	// already there is ErrRolloutExists (history is kept).
	Create(*Record) error
	// Save writes the record, replacing the one of the same id.
	Save(*Record) error
}

var (
	// ErrNoRollout is returned for an unknown rollout id.
	ErrNoRollout = errors.New("no such rollout")
	// ErrRolloutExists refuses a rollout id used before.
	ErrRolloutExists = errors.New("a rollout with this id exists")
)

// BoltStore keeps records in a bbolt file. It opens the file for each
// operation only, so that `labctl rollout list` works while a `labctl
// publish` is running.
type BoltStore struct{ path string }

var (
	bucket       = []byte("rollouts")
	signedBucket = []byte("signed") // id → the submitted rollout's signed Desired states (signedSet, JSON)
)

// signedSet is what signedBucket holds for one rollout.
type signedSet struct {
	Desired  map[string][]byte `json:"desired"`
	Rollback map[string][]byte `json:"rollback,omitempty"`
}

// OpenStore returns the store at path, creating its directory.
func OpenStore(path string) (*BoltStore, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("rollout store: %w", err)
	}
	s := &BoltStore{path: path}
	return s, s.with(func(*bolt.Bucket) error { return nil })
}

// DefaultStorePath is $XDG_STATE_HOME/lab/rollouts.db, or
// ~/.local/state/lab/rollouts.db.
func DefaultStorePath() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "lab", "rollouts.db")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.TempDir()
	}
	return filepath.Join(home, ".local", "state", "lab", "rollouts.db")
}

func (s *BoltStore) with(fn func(*bolt.Bucket) error) error {
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{Timeout: 10 * time.Second})
	if err != nil {
		return fmt.Errorf("rollout store %s: %w", s.path, err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return fn(b)
	})
	if err != nil {
		return fmt.Errorf("rollout store %s: %w", s.path, err)
	}
	return nil
}

// Save writes the record.
func (s *BoltStore) Save(r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.with(func(bk *bolt.Bucket) error { return bk.Put([]byte(r.Plan.ID), b) })
}

// Create saves a new record; an existing one of the same id is kept and
// ErrRolloutExists returned.
func (s *BoltStore) Create(r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	var signed []byte
	if r.Signed != nil {
		if signed, err = json.Marshal(signedSet{Desired: r.Signed, Rollback: r.Rollback}); err != nil {
			return err
		}
	}
	err = s.with(func(bk *bolt.Bucket) error {
		if bk.Get([]byte(r.Plan.ID)) != nil {
			return fmt.Errorf("%w: %q (created earlier; see labctl rollout show %s)", ErrRolloutExists, r.Plan.ID, r.Plan.ID)
		}
		if signed != nil {
			sb, err := bk.Tx().CreateBucketIfNotExists(signedBucket)
			if err != nil {
				return err
			}
			if err := sb.Put([]byte(r.Plan.ID), signed); err != nil {
				return err
			}
		}
		return bk.Put([]byte(r.Plan.ID), b)
	})
	return err
}

// Get returns one record.
func (s *BoltStore) Get(id string) (*Record, error) {
	var r *Record
	err := s.with(func(bk *bolt.Bucket) error {
		v := bk.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%w: %q", ErrNoRollout, id)
		}
		r = new(Record)
		if err := json.Unmarshal(v, r); err != nil {
			return fmt.Errorf("record %s: %w", id, err)
		}
		if sb := bk.Tx().Bucket(signedBucket); sb != nil {
			if v := sb.Get([]byte(id)); v != nil {
				var set signedSet
				if err := json.Unmarshal(v, &set); err != nil {
					return fmt.Errorf("record %s: signed desired states: %w", id, err)
				}
				r.Signed, r.Rollback = set.Desired, set.Rollback
			}
		}
		return nil
	})
	return r, err
}

// List returns every record, newest first.
func (s *BoltStore) List() ([]*Record, error) {
	var out []*Record
	err := s.with(func(bk *bolt.Bucket) error {
		return bk.ForEach(func(k, v []byte) error {
			r := new(Record)
			if err := json.Unmarshal(v, r); err != nil {
				return fmt.Errorf("record %s: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b *Record) int { return b.Created.Compare(a.Created) })
	return out, err
}

// Progress recomputes a recorded rollout from the live fleet view: a
// target that was pending (asleep, offline) when the rollout ended and
// converged later shows its real state, and so does the outcome. A target
// whose end was recorded keeps it (a node that rolled back and took a
// later rollout since still rolled back in this one).
func Progress(rec *Record, f *Fleet) *Result {
	t := newRolloutState(rec.Plan, rec.Waves, rec.Created)
	maps.Copy(t.gens, rec.Gens)
	t.opened, t.openedAt = rec.Opened, rec.OpenedAt
	if rec.Result != nil {
		for _, n := range rec.Result.Nodes {
			if _, target := rec.Plan.Targets[n.Node]; target && !n.Pending && n.State != "" {
				t.nodes[n.Node] = n
			}
		}
	}
	if rec.halted() {
		t.cancelled = rec.State == proto.RolloutCancelled || strings.HasPrefix(rec.Reason, cancelledBy)
		t.halt(rec.Reason)
	}
	t.update(f, nil)
	return t.result(rec.Followed())
}
