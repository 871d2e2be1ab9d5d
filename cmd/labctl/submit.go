package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
)

// keyLocalController makes publish drive rollouts itself (--local-controller).
const keyLocalController = "local_controller"

// submitPartSize is the largest request body publish sends in one
// message: well under the 1 MiB packet limit of the embedded broker
// and of EMQX's defaults.
const submitPartSize = 512 << 10

// submit signs the plan's Desired states, hands the rollout to the
// controller service and follows it (unless --detach).
func submit(ss *session, g *globals, svc *controller.Info, plan controller.Plan, pf publishFlags) error {
	ctx, conn := ss.ctx, ss.conn
	if len(plan.Groups) > 0 {
		fmt.Fprintf(g.errOut, "note: machines that join %s while the rollout runs are not added to it (the controller cannot sign for them); publish again to reach them, or use --local-controller\n", groupList(plan.Groups))
	}
	sub, err := ss.ctl.Prepare(plan, ss.key, time.Now())
	if err != nil {
		return usageError{withFlags(err)}
	}
	reqs, err := controller.SplitRequests(sub, submitPartSize)
	if err != nil {
		return err
	}
	// The fleet's view has served (targets, gens). Following needs only
	// the rollout's state and its targets' status and events; --detach
	// needs nothing. At 10,000 nodes, receiving the rest while the
	// controller publishes was most of labctl's CPU.
	tp := conn.topics
	drop := []string{tp.AllDesired(), tp.AllGates()}
	if pf.detach || pf.noWait {
		drop = conn.fleet.Filters()
	}
	if err := conn.bus.Unsubscribe(ctx, drop...); err != nil {
		g.logger.Debug("unsubscribe from the fleet's view", "err", err)
	}
	var resp *controller.Response
	for _, req := range reqs {
		if resp, err = conn.request(ctx, controller.VerbSubmit, req, requestWait); err != nil {
			return err
		}
	}
	id := resp.Rollout
	if when := schedule(sub.Plan, svc); when != "" {
		fmt.Fprintf(g.errOut, "rollout %s is scheduled: %s\n", id, when)
	}
	if pf.detach || pf.noWait {
		if pf.asJSON {
			return render.WriteJSON(g.out, map[string]string{"rollout": id, "controller": svc.Name})
		}
		fmt.Fprintf(g.out, "rollout %s submitted to the controller service %q (%s, %s); it drives the rollout: `labctl rollout show %s` shows it\n",
			id, svc.Name, render.Count(len(sub.Plan.Targets), "target"), render.Count(len(sub.Waves), "wave"), id)
		return nil
	}
	fmt.Fprintf(g.errOut, "rollout %s submitted to the controller service %q (%s, %s); following it (Ctrl-C stops only the following)\n",
		id, svc.Name, render.Count(len(sub.Plan.Targets), "target"), render.Count(len(sub.Waves), "wave"))
	rep := newReporter(g, pf.asJSON)
	defer rep.stop()
	if pf.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, pf.timeout)
		defer cancel()
	}
	res, err := watchRollout(ctx, conn, rep, submittedRecord(sub))
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("stopped following rollout %s (%w); the controller goes on driving it: `labctl rollout show %s` shows it, `labctl rollout cancel %s` stops it",
				id, context.Cause(ctx), id, id)
		}
		return err
	}
	return rep.result(res, "")
}

// schedule says when a scheduled rollout runs, in words ("" for now).
func schedule(p controller.Plan, svc *controller.Info) string {
	var parts []string
	if !p.NotBefore.IsZero() {
		parts = append(parts, "not before "+p.NotBefore.Format("2006-01-02 15:04 MST"))
	}
	if p.Window.Set {
		parts = append(parts, fmt.Sprintf("waves open only between %s in the controller's time zone (%s)", p.Window, svc.TimeZone))
	}
	return strings.Join(parts, "; ")
}

func groupList(groups map[string]string) string {
	s := ""
	for g := range groups {
		if s != "" {
			s += ", "
		}
		s += "@" + g
	}
	return s
}

// submittedRecord is what the submitter knows of its rollout.
func submittedRecord(sub *controller.Submission) *controller.Record {
	rec := &controller.Record{Plan: sub.Plan, Waves: sub.Waves, Gens: map[string]uint64{}, Created: time.Now(), State: proto.RolloutRunning}
	for n, b := range sub.Desired {
		var d proto.Desired
		if err := proto.Decode(b, &d); err == nil {
			rec.Gens[n] = d.Gen
		}
	}
	return rec
}

// watchRollout follows a submitted rollout from its retained state and
// the targets' retained status, reporting changes as a local run would,
// until the controller says it ended; the result is the controller's
// record of it.
func watchRollout(ctx context.Context, conn *connection, rep *reporter, rec *controller.Record) (*controller.Result, error) {
	o := rep.options(controller.Options{})
	sub := rec
	changes, unwatch := conn.fleet.Watch()
	defer unwatch()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := map[string]controller.NodeResult{}
	opened, halted, rollingBack := 0, false, false
	for {
		rs, ok := conn.fleet.Rollout(sub.Plan.ID)
		if ok {
			for ; opened < rs.OpenWave && opened < len(sub.Waves); opened++ {
				o.OnWave(controller.WaveEvent{Index: opened, Total: len(sub.Waves), Nodes: sub.Waves[opened]})
			}
			rec.Opened = rs.OpenWave
			if rs.Halted && !halted {
				halted = true
				o.OnWave(controller.WaveEvent{Index: opened - 1, Total: len(sub.Waves), Halted: true, Reason: rs.Reason})
			}
		}
		if opened > 0 {
			for _, n := range controller.Progress(rec, conn.fleet).Nodes {
				if prev, seen := last[n.Node]; !seen || prev.State != n.State || prev.Detail != n.Detail {
					last[n.Node] = n
					if seen || n.State != "" {
						o.Progress(n)
					}
				}
			}
		}
		if ok && rs.State != proto.RolloutRunning && rs.State != "" {
			resp, err := conn.request(ctx, controller.VerbShow, &controller.Request{Rollout: sub.Plan.ID}, requestWait)
			if err != nil {
				return nil, err
			}
			r := resp.Record
			switch {
			case r == nil || r.Result == nil:
				return nil, fmt.Errorf("the controller's record of rollout %s has no result", sub.Plan.ID)
			case !r.RollingBack:
				return r.Result, nil
			case !rollingBack:
				// --on-failure rollback: the result comes with the way back.
				rollingBack = true
				if !rep.asJSON {
					fmt.Fprintf(rep.g.errOut, "%s  the rollout halted: the controller switches the targets that succeeded back (a rollout of its own)\n", time.Now().Format("15:04:05"))
				}
			}
			select { // asked again once a second, not at every status
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-tick.C:
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changes:
		case <-tick.C:
		}
	}
}
