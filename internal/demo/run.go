package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/node"
	"github.com/lab-fleet/lab/node/health"
	"github.com/lab-fleet/lab/node/nixsys"
	"github.com/lab-fleet/lab/proto"
)

// group is the one group every demo node belongs to.
const group = "demo"

// nodeDir is where one node keeps its profile, state and switch log.
func (w *world) nodeDir(name string) string { return filepath.Join(w.dir, "nodes", name) }

func (w *world) profile(name string) string {
	return filepath.Join(w.nodeDir(name), "profiles", "system")
}

// nodeConfig is the labd configuration of one demo node: the same code and
// defaults as a real labd, with its profile, state and boot id in the
// demo's directory and one health check, "system-healthy", that fails when
// the new system carries the fail-health marker.
func (w *world) nodeConfig(name string) node.Config {
	dir := w.nodeDir(name)
	return node.Config{
		Name:     name,
		Groups:   []string{group},
		Broker:   []string{"mqtt://" + w.broker.Addr()},
		StateDir: filepath.Join(dir, "state"),
		Nix: nixsys.Config{
			Profile: w.profile(name),
			Env:     append(append([]string{}, w.env...), "FAKE_NIXOS_LOG="+filepath.Join(dir, "switch.log")),
			// No transient systemd units on the demo host: a new session
			// detaches the activation from the process just as well here.
			Detach: nixsys.DetachSetsid,
		},
		Checks: []health.Check{{
			Name:     "system-healthy",
			Type:     health.TypeCommand,
			Command:  []string{"test", "!", "-e", filepath.Join(w.profile(name), "fail-health")},
			Timeout:  5 * time.Second,
			Interval: 200 * time.Millisecond,
			Retries:  1,
		}},
		FetchTimeout:    time.Minute,
		ActivateTimeout: time.Minute,
		ConfirmTimeout:  30 * time.Second,
		TrustedKeys:     []string{w.key.Public().String()},
		BootIDFile:      filepath.Join(dir, "boot_id"),
		// The demo never reboots this machine.
		RebootCommand: []string{"touch", filepath.Join(dir, "reboot-requested")},
		KeepAlive:     10 * time.Second,
		Version:       "demo",
		Logger:        w.quiet().With("component", "labd"),
	}
}

// startNodes installs generation 1 on every node and runs its labd in
// this process. stop ends them and waits.
func (w *world) startNodes(ctx context.Context) (stop func(), err error) {
	nctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() { cancel(); wg.Wait() }
	for _, n := range w.names {
		if err := os.MkdirAll(filepath.Dir(w.profile(n)), 0o755); err != nil {
			stop()
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(w.nodeDir(n), "boot_id"), []byte("demo-boot\n"), 0o644); err != nil {
			stop()
			return nil, err
		}
		if err := w.installGen1(ctx, n, w.profile(n)); err != nil {
			stop()
			return nil, err
		}
		d, err := node.New(w.nodeConfig(n), nil)
		if err != nil {
			stop()
			return nil, fmt.Errorf("node %s: %w", n, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.Run(nctx); err != nil && nctx.Err() == nil {
				w.say("  node %s stopped: %v\n", n, err)
			}
		}()
	}
	w.say("  nodes            %s (labd in-process; group @%s; generation 1 installed)\n", strings.Join(w.names, ", "), group)
	return stop, nil
}

// operator is the demo's operator connection and its view of the fleet.
type operator struct {
	c     *bus.Client
	fleet *controller.Fleet
}

func (o operator) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = o.c.Close(ctx)
}

// connect connects as the operator and subscribes to the fleet's topics.
func (w *world) connect(ctx context.Context) (operator, error) {
	topics := proto.DefaultTopics
	fleet := controller.NewFleet(topics, w.quiet())
	c, err := bus.Dial(ctx, bus.Config{
		URLs: []string{"mqtt://" + w.broker.Addr()}, ClientID: "labctl-demo", CleanStart: true,
		OnMessage: func(m bus.Message) { fleet.Handle(m.Topic, m.Payload) },
		Logger:    w.quiet(),
	})
	if err != nil {
		return operator{}, err
	}
	op := operator{c: c, fleet: fleet}
	if err := c.AwaitConnection(ctx); err != nil {
		op.close()
		return operator{}, fmt.Errorf("connect to the demo broker: %w", err)
	}
	if err := fleet.Subscribe(ctx, c); err != nil {
		op.close()
		return operator{}, err
	}
	return op, nil
}

// rollout waits until every node is online and publishes generation 2 to
// all of them, signed.
func (w *world) rollout(ctx context.Context, op operator) (*controller.Result, error) {
	topics := proto.DefaultTopics
	c, fleet := op.c, op.fleet
	if err := w.awaitOnline(ctx, fleet); err != nil {
		return nil, err
	}
	plan := controller.Plan{ID: controller.NewID(time.Now()), Targets: w.gen2, Action: proto.ActionSwitch}
	w.say("\nlabctl publish --on @%s: rollout %s of generation 2 (signed by key %q)\n", group, plan.ID, w.key.ID)
	start := time.Now()
	ctl := controller.New(c, fleet, topics, "labctl-demo")
	res, err := ctl.Run(ctx, plan, controller.Options{
		Key: &w.key, Timeout: 2 * time.Minute, Logger: w.quiet(),
		Progress: func(r controller.NodeResult) {
			if r.State == "" {
				return
			}
			w.say("  %6.2fs  %-4s %s\n", time.Since(start).Seconds(), r.Node, r.State)
		},
	})
	if err != nil {
		return nil, err
	}
	w.say("\n")
	if err := render.WriteResult(w.opts.Out, res); err != nil {
		return nil, err
	}
	w.say("\nlabctl status:\n")
	if err := render.WriteStatus(w.opts.Out, render.StatusRows(fleet.Snapshot()), time.Now()); err != nil {
		return nil, err
	}
	return res, nil
}

func (w *world) awaitOnline(ctx context.Context, fleet *controller.Fleet) error {
	for {
		online := 0
		for _, n := range w.names {
			if v, ok := fleet.Get(n); ok && v.Online && v.Status != nil {
				online++
			}
		}
		if online == len(w.names) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the nodes to come online (%d of %d): %w", online, len(w.names), ctx.Err())
		case <-fleet.Changed():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// explain tells what each node did and checks that it is what the demo
// promises: every node on generation 2 except the bad one, which rolled
// back to generation 1.
func (w *world) explain(res *controller.Result) error {
	w.say("\nWhat happened on each node:\n")
	var wrong []string
	for _, r := range res.Nodes {
		cur := w.current(r.Node)
		switches := w.switches(r.Node)
		want, wantState := w.gen2[r.Node], proto.StateSucceeded
		if r.Node == w.bad {
			want, wantState = w.gen1[r.Node], proto.StateRolledBack
		}
		switch r.State {
		case proto.StateSucceeded:
			w.say("  %-4s realised generation 2, switched to it, its health check passed: it now runs %s\n", r.Node, render.ShortPath(cur))
		case proto.StateRolledBack:
			w.say("  %-4s switched to generation 2, its health check failed (%s),\n       so it switched back by itself: it runs %s again\n",
				r.Node, oneLine(r.Detail), render.ShortPath(cur))
		default:
			w.say("  %-4s ended %s: %s\n", r.Node, stateOr(r.State), oneLine(r.Detail))
		}
		w.say("       switch-to-configuration calls: %s\n", strings.Join(switches, ", "))
		if r.State != wantState || cur != want {
			wrong = append(wrong, fmt.Sprintf("%s ended %s on %s, expected %s on %s", r.Node, stateOr(r.State), render.ShortPath(cur), wantState, render.ShortPath(want)))
		}
	}
	if len(wrong) > 0 {
		return fmt.Errorf("%w:\n  %s", errUnexpected, strings.Join(wrong, "\n  "))
	}
	w.say(`
The rollout exits with code 4 in "labctl publish" (a node rolled back), and
every node's live state stays in retained MQTT messages that any client can
read, e.g. mosquitto_sub -t 'lab/v1/node/+/status' (msgpack payloads).

To run lab for real: "labctl broker" on a reachable host, "labd" on each
machine (see README.md), then "labctl publish". This demo is done.
`)
	return nil
}

func (w *world) current(name string) string {
	t, err := filepath.EvalSymlinks(w.profile(name))
	if err != nil {
		return ""
	}
	return t
}

// switches lists the node's switch-to-configuration calls as
// "switch gen N" from its fake system's log.
func (w *world) switches(name string) []string {
	b, err := os.ReadFile(filepath.Join(w.nodeDir(name), "switch.log"))
	if err != nil {
		return []string{"none"}
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		action, path, _ := strings.Cut(line, " ")
		gen := render.ShortPath(path)
		switch path {
		case w.gen1[name]:
			gen = "generation 1"
		case w.gen2[name]:
			gen = "generation 2"
		}
		out = append(out, action+" "+gen)
	}
	return out
}

func stateOr(s proto.ExecState) string {
	if s == "" {
		return "pending"
	}
	return string(s)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}
