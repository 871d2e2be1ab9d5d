package node

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// publisher sends queued status and event publishes in order, so the loop
// never waits for the network. It returns when ctx ends, after draining.
func (d *Daemon) publisher(ctx context.Context) {
	for {
		select {
		case f := <-d.pubq:
			pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			f(pctx)
			cancel()
		case <-ctx.Done():
			for {
				select {
				case f := <-d.pubq:
					pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					f(pctx)
					cancel()
				default:
					return
				}
			}
		}
	}
}

// enqueue queues one publish behind the earlier ones. The returned
// channel gets the publish's outcome (nil: acknowledged); it is nil when
// the message was not queued.
func (d *Daemon) enqueue(topic string, m proto.Message, retain bool) <-chan error {
	b, err := proto.Seal(m)
	if err != nil {
		d.log.Error("cannot encode own message", "topic", topic, "err", err)
		return nil
	}
	done := make(chan error, 1)
	f := func(ctx context.Context) {
		if d.bus == nil {
			done <- nil
			return
		}
		err := d.bus.Publish(ctx, topic, b, retain)
		if err != nil {
			d.log.Debug("publish failed (republished on reconnect)", "topic", topic, "err", err)
		}
		done <- err
	}
	select {
	case d.pubq <- f:
		return done
	default:
		d.log.Warn("publish queue full, dropping (status is republished on reconnect)", "topic", topic)
		return nil
	}
}

// enqueueStatus publishes the retained status as it is now; the channel
// gets the outcome (see enqueue).
func (d *Daemon) enqueueStatus() <-chan error {
	d.metricsChanged() // the textfile follows the status
	return d.enqueue(d.topics.NodeStatus(d.cfg.Name), d.status(), true)
}

func (d *Daemon) enqueueEvent(rollout string, gen uint64, from, to proto.ExecState, detail string) {
	d.publishEvent(&proto.Event{Node: d.cfg.Name, Rollout: rollout, Gen: gen, Prev: from, State: to, Detail: detail})
}

// ack acknowledges a command: an event that names it, its op and what
// the node did with it (labctl reboot reports a refusal or a failure at
// once instead of waiting for its deadline).
func (d *Daemon) ack(a cmdAck, from, to proto.ExecState, detail string) {
	rollout := a.rollout
	if proto.ValidID(rollout) != nil {
		rollout = ""
	}
	if a.outcome == proto.CmdAccepted {
		d.log.Info("command accepted", "op", a.op, "cmd", a.id, "detail", detail)
	} else {
		d.log.Warn("command not carried out", "op", a.op, "cmd", a.id, "outcome", a.outcome, "reason", detail)
	}
	d.publishEvent(&proto.Event{Node: d.cfg.Name, Rollout: rollout, Prev: from, State: to, Detail: detail,
		Cmd: clip(a.id, 128), Op: a.op, Outcome: a.outcome})
}

func (d *Daemon) publishEvent(e *proto.Event) {
	e.Detail = tail(e.Detail, 2000)
	e.Stamp(d.cfg.Name, time.Now())
	d.enqueue(d.topics.NodeEvents(d.cfg.Name), e, false)
}

// status builds the NodeStatus from the state and the machine's facts.
func (d *Daemon) status() *proto.NodeStatus {
	d.mu.Lock()
	st, checks, trouble := d.st, d.checkR, d.trouble
	var problems []string
	for _, p := range d.problems {
		problems = append(problems, p)
	}
	d.mu.Unlock()
	slices.Sort(problems)
	s := &proto.NodeStatus{Node: d.cfg.Name, Groups: d.cfg.Groups, Execution: st.Exec, AppliedGen: st.AppliedGen,
		Checks: checks, LabdVersion: d.cfg.Version, Machine: d.cfg.Machine, Problems: problems, UpdatedAt: time.Now().UnixMilli()}
	if trouble.Attempts > 0 {
		s.Connect = &proto.ConnectTrouble{Attempts: trouble.Attempts, Since: trouble.First.UnixMilli(), Until: trouble.Last.UnixMilli(),
			Error: clip(trouble.Err.Error(), 500)}
	}
	if !s.Execution.State.Valid() {
		s.Execution.State = proto.StateIdle
	}
	s.Execution.Error = tail(s.Execution.Error, 2000)
	s.Current = storePathOrEmpty(d.nix.Current())
	s.Booted = storePathOrEmpty(d.nix.Booted())
	s.Previous = storePathOrEmpty(st.Previous, nil)
	s.Generations = d.generations()
	if s.Current != "" {
		if b, err := os.ReadFile(filepath.Join(s.Current, "nixos-version")); err == nil {
			s.NixOSVersion = clip(strings.TrimSpace(string(b)), 128)
		}
	}
	if b, err := os.ReadFile(d.cfg.BootIDFile); err == nil {
		s.BootID = clip(strings.TrimSpace(string(b)), 128)
	}
	s.NeedsReboot = s.Booted != "" && s.Current != "" && s.Booted != s.Current
	s.Pins = d.keys.report()
	s.Recipient, s.Secrets = d.secrets.report()
	s.HostKeys = d.hostKeys()
	s.Stamp(d.cfg.Name, time.Now())
	return s
}

func (d *Daemon) presence(online bool) ([]byte, error) {
	return proto.Seal(d.presenceMsg(online))
}

func (d *Daemon) presenceMsg(online bool) *proto.Presence {
	p := &proto.Presence{Node: d.cfg.Name, Online: online, Since: time.Now().UnixMilli()}
	p.Stamp(d.cfg.Name, time.Now())
	return p
}

func storePathOrEmpty(p string, err error) string {
	if err != nil || proto.ValidStorePath(p) != nil {
		return ""
	}
	return p
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// generations lists the profile's newest generations for the status;
// a profile that cannot be read lists none (the status still goes out).
func (d *Daemon) generations() []proto.Generation {
	gens, err := d.nix.Generations()
	if err != nil {
		d.log.Debug("status: generations not listed", "err", err)
		return nil
	}
	gens = gens[max(0, len(gens)-proto.MaxReportedGenerations):]
	out := make([]proto.Generation, 0, len(gens))
	for _, g := range gens {
		if proto.ValidStorePath(g.Toplevel) != nil {
			continue
		}
		pg := proto.Generation{Number: g.Number, Toplevel: g.Toplevel, Current: g.Current}
		if !g.Created.IsZero() {
			pg.Created = g.Created.UnixMilli()
		}
		out = append(out, pg)
	}
	return out
}
