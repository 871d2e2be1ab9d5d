package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/lab-fleet/lab/proto"
	bolt "go.etcd.io/bbolt"
)

// RebootJob is an ordered reboot handed to the controller service
// (labctl reboot): the machines, and how long each may take to come back.
type RebootJob struct {
	ID       string        `json:"id"`
	Nodes    []string      `json:"nodes"`
	Deadline time.Duration `json:"deadline,omitempty"` // per machine; default 10m
}

// The states of a reboot job.
const (
	JobRunning     = "running"
	JobDone        = "done"        // every machine was handled (see each result)
	JobInterrupted = "interrupted" // the controller stopped while it ran: the rest was not rebooted
)

// JobRecord is a reboot job as the service keeps it.
type JobRecord struct {
	Job       RebootJob      `json:"job"`
	Order     []string       `json:"order"` // the machines in the order they are rebooted
	State     string         `json:"state"`
	Reason    string         `json:"reason,omitempty"`
	Results   []RebootResult `json:"results,omitempty"`
	Submitter string         `json:"submitter,omitempty"`
	Created   time.Time      `json:"created"`
	Updated   time.Time      `json:"updated"`
}

// maxJobNodes bounds a reboot job (one machine at a time: a long night).
const maxJobNodes = 10_000

// check validates a job.
func (j *RebootJob) check() error {
	if err := proto.ValidID(j.ID); err != nil {
		return fmt.Errorf("%w: job id %q: %v", ErrRefused, j.ID, err)
	}
	if len(j.Nodes) == 0 || len(j.Nodes) > maxJobNodes {
		return fmt.Errorf("%w: a reboot job names 1 to %d machines, not %d", ErrRefused, maxJobNodes, len(j.Nodes))
	}
	seen := map[string]bool{}
	for _, n := range j.Nodes {
		if err := proto.ValidID(n); err != nil {
			return fmt.Errorf("%w: machine %q: %v", ErrRefused, n, err)
		}
		if seen[n] {
			return fmt.Errorf("%w: machine %s listed twice", ErrRefused, n)
		}
		seen[n] = true
	}
	if j.Deadline < 0 || j.Deadline > 24*time.Hour {
		return fmt.Errorf("%w: deadline %s: want up to 24h per machine", ErrRefused, j.Deadline)
	}
	return nil
}

var jobsBucket = []byte("reboots")

// SaveJob writes a reboot job's record.
func (s *BoltStore) SaveJob(j *JobRecord) error {
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return s.withBucket(jobsBucket, func(bk *bolt.Bucket) error { return bk.Put([]byte(j.Job.ID), b) })
}

// CreateJob saves a new job; an id used before is ErrRolloutExists.
func (s *BoltStore) CreateJob(j *JobRecord) error {
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return s.withBucket(jobsBucket, func(bk *bolt.Bucket) error {
		if bk.Get([]byte(j.Job.ID)) != nil {
			return fmt.Errorf("%w: reboot job %q", ErrRolloutExists, j.Job.ID)
		}
		return bk.Put([]byte(j.Job.ID), b)
	})
}

// Job returns one reboot job's record.
func (s *BoltStore) Job(id string) (*JobRecord, error) {
	var j *JobRecord
	err := s.withBucket(jobsBucket, func(bk *bolt.Bucket) error {
		v := bk.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%w: reboot job %q", ErrNoRollout, id)
		}
		j = new(JobRecord)
		return json.Unmarshal(v, j)
	})
	return j, err
}

// Jobs returns every reboot job's record.
func (s *BoltStore) Jobs() ([]*JobRecord, error) {
	var out []*JobRecord
	err := s.withBucket(jobsBucket, func(bk *bolt.Bucket) error {
		return bk.ForEach(func(_, v []byte) error {
			j := new(JobRecord)
			if err := json.Unmarshal(v, j); err != nil {
				return err
			}
			out = append(out, j)
			return nil
		})
	})
	return out, err
}

func (s *BoltStore) withBucket(name []byte, fn func(*bolt.Bucket) error) error {
	return s.with(func(b *bolt.Bucket) error {
		bk, err := b.Tx().CreateBucketIfNotExists(name)
		if err != nil {
			return err
		}
		return fn(bk)
	})
}

// startJob records a reboot job and runs it on its own goroutine.
func (s *Service) startJob(job RebootJob, who string) (*JobRecord, error) {
	if err := job.check(); err != nil {
		return nil, err
	}
	if err := s.commandTrust(job.Nodes); err != nil {
		return nil, err
	}
	now := s.cfg.Clock.Now()
	rec := &JobRecord{Job: job, Order: s.ctl.RebootOrder(job.Nodes), State: JobRunning, Submitter: who, Created: now, Updated: now}
	js, ok := s.cfg.Store.(JobStore)
	if !ok {
		return nil, fmt.Errorf("%w: this controller's store keeps no reboot jobs", ErrRefused)
	}
	if err := js.CreateJob(rec); err != nil {
		return nil, err
	}
	s.log.Info("reboot job accepted", "job", job.ID, "submitter", who, "order", rec.Order)
	k := s.cfg.Key
	s.drive("reboot/"+job.ID, nil, func(ctx context.Context) (*Result, error) {
		save := func() { // on this goroutine only
			rec.Updated = s.cfg.Clock.Now()
			if err := js.SaveJob(rec); err != nil {
				s.log.Warn("save reboot job", "job", job.ID, "err", err)
			}
		}
		res, err := s.ctl.Reboot(ctx, job.Nodes, RebootOptions{Key: &k, Deadline: job.Deadline, Clock: s.cfg.Clock, Progress: func(r RebootResult) {
			s.log.Info("reboot job: machine done", "job", job.ID, "node", r.Node, "state", r.State, "detail", r.Detail, "took", r.Took.Round(time.Millisecond))
			rec.Results = append(rec.Results, r)
			save()
		}})
		if err != nil {
			rec.State, rec.Reason = JobInterrupted, "the controller stopped while it ran: "+err.Error()
		} else {
			rec.State, rec.Results = JobDone, res
			s.log.Info("reboot job done", "job", job.ID, "machines", len(res))
		}
		save()
		return nil, err
	})
	return rec, nil
}

// JobStore is a store that also keeps reboot jobs (BoltStore does).
type JobStore interface {
	CreateJob(*JobRecord) error
	SaveJob(*JobRecord) error
	Job(id string) (*JobRecord, error)
	Jobs() ([]*JobRecord, error)
}

// interruptJobs marks the reboot jobs that were running when the service
// stopped: a reboot may have been in flight, so the job is not run again
// by itself (a machine would reboot twice); the record says what is left.
func (s *Service) interruptJobs() {
	js, ok := s.cfg.Store.(JobStore)
	if !ok {
		return
	}
	jobs, err := js.Jobs()
	if err != nil {
		s.log.Error("reading reboot jobs", "err", err)
		return
	}
	for _, j := range jobs {
		if j.State != JobRunning {
			continue
		}
		done := map[string]bool{}
		for _, r := range j.Results {
			done[r.Node] = true
		}
		var left []string
		for _, n := range j.Order {
			if !done[n] {
				left = append(left, n)
			}
		}
		j.State, j.Updated = JobInterrupted, s.cfg.Clock.Now()
		j.Reason = fmt.Sprintf("the controller stopped while the job ran; not done: %v (the first may have rebooted): check them and run labctl reboot again for the rest", left)
		if err := js.SaveJob(j); err != nil {
			s.log.Error("saving an interrupted reboot job", "job", j.Job.ID, "err", err)
		}
		s.log.Warn("a reboot job was interrupted by the controller's stop", "job", j.Job.ID, "left", left)
	}
}

// commandTrust refuses a job whose machines say (in their status) that
// they would not accept commands signed by this service.
func (s *Service) commandTrust(nodes []string) error {
	var refusing []string
	for _, n := range nodes {
		v, _ := s.cfg.Fleet.Get(n)
		if ok, known := v.Status.AcceptsGateKey(s.cfg.Key.ID); known && !ok {
			refusing = append(refusing, n)
		}
	}
	if len(refusing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s would refuse this controller's reboot commands (they do not pin its key %q): add %s to their controller_keys (NixOS: services.labd.controllerKeys), or run labctl reboot with --local-controller",
		ErrRefused, list(refusing), s.cfg.Key.ID, s.cfg.Key.Public().String())
}
