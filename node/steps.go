package node

import (
	"context"
	"errors"
	"fmt"
	"github.com/lab-fleet/lab/internal/clock"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/lab-fleet/lab/node/health"
	"github.com/lab-fleet/lab/node/hook"
	"github.com/lab-fleet/lab/node/nixsys"
	"github.com/lab-fleet/lab/proto"
)

// fetch realises the toplevel's closure and reads the secrets it declares.
func (d *Daemon) fetch(ctx context.Context, e effFetch) evFetched {
	err := d.nix.Realise(ctx, e.toplevel)
	cur, _ := d.nix.Current()
	ev := evFetched{gen: e.gen, err: err, current: cur}
	if err == nil {
		// What the new system declares it needs (secrets_needed.go).
		ev.needs, ev.declErr = readDeclared(d.nix.SystemFile, e.toplevel)
	}
	return ev
}

// activate moves the profile (not for action test) and runs the detached
// switch, or reattaches to one started before a restart.
func (d *Daemon) activate(ctx context.Context, e effActivate) evActivated {
	var act *nixsys.Activation
	if e.resume {
		a, ok, err := d.nix.ResumeActivation(d.runDir())
		if err == nil && ok && a.Toplevel == e.toplevel {
			act = a
		}
	}
	if act == nil {
		// Resumed, the profile may have moved before labd stopped.
		cur, _ := d.nix.Current()
		moved := e.action != proto.ActionTest && cur == e.toplevel && e.previous != e.toplevel
		// Everything that could keep the switch from starting is checked
		// before the profile moves: then the node only failed.
		if err := d.nix.CheckActivation(e.toplevel, string(e.action), d.runDir()); err != nil {
			return d.notStarted(ctx, e, moved, err)
		}
		if e.action != proto.ActionTest && cur != e.toplevel {
			if err := d.nix.SetProfile(ctx, e.toplevel); err != nil {
				return evActivated{gen: e.gen, detail: err.Error()}
			}
			moved = true
		}
		a, err := d.nix.StartActivation(ctx, e.toplevel, string(e.action), d.runDir())
		if err != nil {
			return d.notStarted(ctx, e, moved, err)
		}
		act = a
	}
	res, err := act.Wait(ctx)
	if errors.Is(err, nixsys.ErrNeverStarted) {
		// Recorded, but the switch never ran (labd died in between):
		// run it now — still one activation of this generation.
		d.log.Warn("the recorded activation never started; starting it", "toplevel", e.toplevel, "err", err)
		if act, err = d.nix.StartActivation(ctx, e.toplevel, string(e.action), d.runDir()); err == nil {
			res, err = act.Wait(ctx)
		}
	}
	if err != nil {
		return evActivated{gen: e.gen, profileMoved: true, detail: err.Error()}
	}
	return evActivated{gen: e.gen, profileMoved: true, ok: res.OK(), detail: tail(fmt.Sprintf("exit %d: %s", res.ExitCode, res.OutputTail), 1500)}
}

// notStarted handles an activation that cannot start (its check failed)
// or could not be started: the switch did not run, so setting the profile
// back, if it moved, is all there is to undo and the execution only
// failed. If that fails too, the machine rolls back.
func (d *Daemon) notStarted(ctx context.Context, e effActivate, moved bool, err error) evActivated {
	var ae *nixsys.ActivationError
	if !errors.As(err, &ae) || (ae.Phase != "check" && ae.Phase != "start") {
		return evActivated{gen: e.gen, profileMoved: moved, detail: err.Error()}
	}
	if !moved {
		return evActivated{gen: e.gen, detail: "the activation cannot start, so nothing was changed: " + err.Error()}
	}
	if proto.ValidStorePath(e.previous) != nil {
		return evActivated{gen: e.gen, profileMoved: true, detail: err.Error()}
	}
	if rerr := d.nix.SetProfile(ctx, e.previous); rerr != nil {
		return evActivated{gen: e.gen, profileMoved: true, detail: fmt.Sprintf("%v; setting the profile back: %v", err, rerr)}
	}
	return evActivated{gen: e.gen, detail: "the activation cannot start and the profile is back on the previous system, so nothing was changed: " + err.Error()}
}

// verify proves the broker is reachable from the new system, then runs
// the required and configured checks. Until both happen the execution's
// confirm timer runs: a configuration that broke the network, or the
// health endpoint, is rolled back by the node itself ("magic rollback").
func (d *Daemon) verify(ctx context.Context, e effChecks) evChecked {
	if err := d.confirmBroker(ctx, e.gen); err != nil {
		return evChecked{gen: e.gen, detail: "cancelled"}
	}
	d.sendCtx(ctx, evConfirmed{e.gen})
	names := make([]string, len(d.cfg.Checks))
	for i, c := range d.cfg.Checks {
		names[i] = c.Name
	}
	if ok, missing := hasAll(names, e.names); !ok {
		return evChecked{gen: e.gen, detail: fmt.Sprintf("required check %q is not configured on this node", missing)}
	}
	runner := *d.checks
	runner.Env = append(runner.Env, "LAB_TOPLEVEL="+e.toplevel)
	results := runner.Run(ctx, d.cfg.Checks)
	d.recordChecks(results)
	var failed []string
	for _, r := range results {
		if !r.OK {
			failed = append(failed, fmt.Sprintf("%s: %s", r.Name, r.Detail))
		}
	}
	if len(failed) > 0 {
		return evChecked{gen: e.gen, detail: tail(strings.Join(failed, "; "), 1500)}
	}
	if len(results) == 1 {
		return evChecked{gen: e.gen, ok: true, detail: "1 check passed"}
	}
	return evChecked{gen: e.gen, ok: true, detail: fmt.Sprintf("%d checks passed", len(results))}
}

// confirmBroker returns once a round trip to the broker succeeded after
// the activation: the node's status, published at QoS 1 (through the
// publish queue, so that no older status lands after it) and acknowledged
// by the broker. "Connected" alone is not proof: a connection opened
// before the switch looks up until its keepalive runs out, even when the
// new configuration cut the network. It gives up when ctx ends or the
// execution moved on (the confirm timer decided: rolled back).
func (d *Daemon) confirmBroker(ctx context.Context, gen uint64) error {
	if d.bus == nil {
		return nil
	}
	for {
		if s := d.snapshot(); s.Exec.Gen != gen || s.Exec.State != proto.StateVerifying {
			return errors.New("the execution moved on")
		}
		if d.bus.Connected() {
			if done := d.enqueueStatus(); done != nil {
				select {
				case err := <-done:
					if err == nil {
						return nil
					}
					d.log.Warn("waiting for the broker after the activation", "err", err)
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (d *Daemon) recordChecks(results []health.Result) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.checkR = proto.CheckResults{}
	for _, r := range results {
		d.checkR[r.Name] = proto.CheckResult{OK: r.OK, Detail: tail(r.Detail, 512), At: r.At.UnixMilli()}
	}
}

// rollback runs the pre_rollback hooks, points the profile back at the
// recorded previous system and activates it, then runs the post_rollback
// hooks. What the hooks said goes into the event; a failing hook never
// stops the rollback.
func (d *Daemon) rollback(ctx context.Context, e effRollback) evRolledBack {
	pre := d.rollbackHooks(ctx, hook.PreRollback, e.env)
	ev := d.rollbackActivation(ctx, e)
	ev.hooks = strings.Join(slices.DeleteFunc([]string{pre, d.rollbackHooks(ctx, hook.PostRollback, e.env)}, func(s string) bool { return s == "" }), "; ")
	return ev
}

// rollbackActivation points the profile back at the recorded previous
// system and activates it.
func (d *Daemon) rollbackActivation(ctx context.Context, e effRollback) evRolledBack {
	if err := proto.ValidStorePath(e.previous); err != nil {
		return evRolledBack{gen: e.gen, err: fmt.Errorf("previous system: %w", err)}
	}
	if cur, _ := d.nix.Current(); cur != e.previous {
		if err := d.nix.SetProfile(ctx, e.previous); err != nil {
			return evRolledBack{gen: e.gen, err: err}
		}
	}
	act, err := d.nix.StartActivation(ctx, e.previous, string(e.action), d.runDir())
	if errors.Is(err, nixsys.ErrActivationRunning) {
		// The failed activation is still running (e.g. it timed out): wait for it first.
		if a, ok, rerr := d.nix.ResumeActivation(d.runDir()); rerr == nil && ok {
			_, _ = a.Wait(ctx)
		}
		act, err = d.nix.StartActivation(ctx, e.previous, string(e.action), d.runDir())
	}
	if err != nil {
		return evRolledBack{gen: e.gen, err: err}
	}
	res, err := act.Wait(ctx)
	if err != nil {
		return evRolledBack{gen: e.gen, err: err}
	}
	return evRolledBack{gen: e.gen, err: res.Err()}
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// reboot runs the configured reboot command once the status saying why
// is on its way. The process is expected to die with the machine. If the
// command fails, with the command's output as the reason, an operator's
// reboot command is acknowledged as failed and an execution waiting for
// the reboot is told (it rolls back at once, not at its deadline).
func (d *Daemon) reboot(ctx context.Context, e effReboot) {
	d.enqueueStatus()
	time.Sleep(300 * time.Millisecond) // let the publisher send the status first
	d.log.Warn("rebooting", "why", e.why, "command", d.cfg.RebootCommand)
	cmd := exec.CommandContext(ctx, d.cfg.RebootCommand[0], d.cfg.RebootCommand[1:]...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		return
	}
	detail := fmt.Sprintf("reboot command %q failed: %v", strings.Join(d.cfg.RebootCommand, " "), err)
	if o := tail(string(out), 500); o != "" {
		detail += ": " + o
	}
	d.log.Error("reboot command failed", "err", err, "output", tail(string(out), 500))
	s := d.snapshot()
	switch {
	case e.cmd.id != "":
		cur := s.Exec.State
		if !cur.Valid() {
			cur = proto.StateIdle
		}
		failed := e.cmd
		failed.outcome = proto.CmdFailed
		d.ack(failed, proto.StateRebooting, cur, detail)
	case e.gen != 0:
		d.sendCtx(ctx, evRebootFailed{gen: e.gen, detail: detail})
	default:
		d.enqueueEvent(s.Exec.Rollout, 0, proto.StateRebooting, proto.StateRebooting, detail)
	}
}

// bootChecks runs every configured check once after the machine rebooted
// and publishes the results, for labctl reboot to confirm.
func (d *Daemon) bootChecks(ctx context.Context) {
	for d.bus != nil && !d.bus.Connected() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	results := d.checks.Run(ctx, d.cfg.Checks)
	d.recordChecks(results)
	d.enqueueStatus()
}

// idleChecks runs the health checks every CheckInterval while no
// rollout is in progress on the machine, and publishes their results: a
// machine that turns unhealthy between rollouts says so (the controller's
// alerts tell someone). During a rollout its own verification runs them.
func (d *Daemon) idleChecks(ctx context.Context) {
	if d.cfg.CheckInterval <= 0 || len(d.cfg.Checks) == 0 {
		return
	}
	clk := clock.Or(d.cfg.Clock)
	for {
		tick, t := clock.After(clk, d.cfg.CheckInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-tick:
		}
		if st := d.snapshot().Exec.State; st != "" && st != proto.StateIdle && !st.Terminal() {
			continue // a rollout is under way: it verifies the checks itself
		}
		if d.bus == nil || !d.bus.Connected() {
			continue // nobody to tell; the reconnect publishes the status
		}
		results := d.checks.Run(ctx, d.cfg.Checks)
		if ctx.Err() != nil {
			return
		}
		d.recordChecks(results)
		d.enqueueStatus()
	}
}

func (d *Daemon) snapshot() state {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st
}

func readBootID(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
