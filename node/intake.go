package node

import (
	"fmt"
	"slices"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/proto"
)

// receive decodes, verifies and routes one incoming message. It runs on
// the bus goroutine and only hands events to the loop; anything invalid is
// reported as a rejected event and changes nothing.
func (d *Daemon) receive(m bus.Message) {
	r, err := d.topics.Parse(m.Topic)
	if err != nil {
		d.reject("", 0, fmt.Sprintf("message on unexpected topic %q", m.Topic))
		return
	}
	switch r.Kind {
	case proto.TopicDesired:
		if len(m.Payload) == 0 {
			return // retained desired state cleared by an operator
		}
		var dsr proto.Desired
		if err := d.checkDesired(m.Payload, &dsr); err != nil {
			d.reject(dsr.Rollout, dsr.Gen, "desired: "+err.Error())
			return
		}
		d.send(evDesired{d: &dsr})
	case proto.TopicGate:
		if len(m.Payload) == 0 {
			return
		}
		var g proto.Gate
		if err := proto.Decode(m.Payload, &g); err != nil {
			d.reject("", 0, "gate: "+err.Error())
			return
		}
		if err := d.keys.verifyControl(&g); err != nil {
			d.reject(g.Rollout, 0, "gate: "+err.Error())
			return
		}
		if g.Group != r.Group {
			d.reject(g.Rollout, 0, fmt.Sprintf("gate: names group %q but came on %s", g.Group, m.Topic))
			return
		}
		d.send(evGate{group: g.Group, g: gate{Rollout: g.Rollout, OpenWave: g.OpenWave, State: g.State, Seq: g.Seq}})
	case proto.TopicNodeCmd, proto.TopicGroupCmd, proto.TopicAllCmd:
		d.command(m.Payload)
	case proto.TopicPresence:
		d.healPresence(r.Node, m.Payload)
	case proto.TopicSecret:
		d.secretMessage(r, m.Payload)
	}
}

// healPresence answers this node's own presence saying "offline" while
// labd runs: that is a Last Will of an earlier connection which the
// broker published late — after this connection's "online" — as an
// embedded (multi-threaded) broker does when a new connection takes over
// one it had not yet seen die (a NAT that dropped the old one, a labd
// killed and restarted at once). Left alone, the fleet would show a
// running node offline until its next reconnect. Presence online is
// queued again; "online" itself needs no answer, so this cannot loop.
func (d *Daemon) healPresence(node string, payload []byte) {
	if node != d.cfg.Name || len(payload) == 0 || d.stopping.Load() {
		return
	}
	var p proto.Presence
	if err := proto.Decode(payload, &p); err != nil || p.Online {
		return
	}
	d.log.Debug("the broker holds this node offline while it runs (a late Last Will): presence online again")
	d.enqueue(d.topics.NodePresence(d.cfg.Name), d.presenceMsg(true), true)
}

// checkDesired decodes strictly and verifies what the payload cannot prove
// by itself: it is for this node, signed by a pinned operator key, not
// expired.
func (d *Daemon) checkDesired(payload []byte, dsr *proto.Desired) error {
	if err := proto.Decode(payload, dsr); err != nil {
		return err
	}
	if dsr.Node != d.cfg.Name {
		return fmt.Errorf("%w: addressed to node %q, this is %q", proto.ErrInvalidField, dsr.Node, d.cfg.Name)
	}
	if err := d.keys.verifyDesired(dsr); err != nil {
		return err
	}
	if proto.Expired(dsr.Expires, d.m.clock.Now()) {
		return fmt.Errorf("%w: expired at %s", proto.ErrExpired, time.UnixMilli(dsr.Expires).UTC().Format(time.RFC3339))
	}
	return nil
}

// command handles one-shot commands. This version acts on cancel, resync
// and reboot; the others are refused as not supported yet. A reboot
// command addressed to this node is acknowledged (accepted, refused or
// failed, see proto.CmdOutcome); the others are not.
func (d *Daemon) command(payload []byte) {
	var c proto.Command
	if err := proto.Decode(payload, &c); err != nil {
		d.reject("", 0, "command: "+err.Error())
		return
	}
	if err := d.keys.verifyControl(&c); err != nil {
		d.refuse(&c, err.Error())
		return
	}
	if proto.Expired(c.Expires, d.m.clock.Now()) {
		d.refuse(&c, proto.ErrExpired.Error())
		return
	}
	if !d.addressed(&c) {
		return
	}
	switch c.Op {
	case proto.OpCancel:
		d.send(evCancel{rollout: c.Rollout})
	case proto.OpResync:
		d.enqueueStatus()
	case proto.OpReboot:
		d.send(evRebootCmd{id: c.ID, rollout: c.Rollout})
	default:
		d.log.Warn("command not supported yet", "op", c.Op)
		d.refuse(&c, "not supported by this labd")
	}
}

func (d *Daemon) addressed(c *proto.Command) bool {
	return len(c.Targets) == 0 || slices.Contains(c.Targets, d.cfg.Name)
}

// refuse reports a command the node will not act on: as a refused
// acknowledgement when it is a reboot or an unsupported op addressed to
// this node, else as a rejected event.
func (d *Daemon) refuse(c *proto.Command, reason string) {
	detail := "command " + string(c.Op) + " refused: " + reason
	if c.Op == proto.OpCancel || c.Op == proto.OpResync || !d.addressed(c) {
		d.reject(c.Rollout, 0, detail)
		return
	}
	cur := d.snapshot().Exec.State
	if !cur.Valid() {
		cur = proto.StateIdle
	}
	d.ack(cmdAck{id: c.ID, rollout: c.Rollout, op: c.Op, outcome: proto.CmdRefused}, cur, proto.StateRejected, detail)
}

// reject reports a refused message as a rejected event.
func (d *Daemon) reject(rollout string, gen uint64, reason string) {
	if proto.ValidID(rollout) != nil {
		rollout = ""
	}
	d.log.Warn("rejected message", "reason", reason)
	d.metrics.Rejected()
	d.metricsChanged()
	d.mu.Lock()
	cur := d.st.Exec.State
	d.mu.Unlock()
	if !cur.Valid() {
		cur = proto.StateIdle
	}
	d.enqueueEvent(rollout, gen, cur, proto.StateRejected, reason)
}
