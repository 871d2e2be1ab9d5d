package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/lab-fleet/lab/broker"
	"github.com/lab-fleet/lab/node/nixsys"
	"github.com/lab-fleet/lab/proto"
)

// Options configure a demo run.
type Options struct {
	Nodes   int           // how many local nodes, at least 2
	Dir     string        // work directory; "" = a new temporary one
	Keep    bool          // keep the work directory afterwards
	Timeout time.Duration // for the whole demo
	Out     io.Writer     // where the story is told
	Logger  *slog.Logger  // component logs (quiet by default)
}

// world is what a demo run sets up.
type world struct {
	opts   Options
	dir    string
	env    []string
	names  []string
	gen1   map[string]string
	gen2   map[string]string
	bad    string // the node whose generation 2 fails its health check
	key    proto.PrivateKey
	broker *broker.Server
}

// Run runs the demo. It returns ErrNoNix when Nix is missing, and an error
// when the rollout did not end as the demo expects.
func Run(ctx context.Context, opts Options) (err error) {
	if opts.Nodes < 2 || opts.Nodes > 50 {
		return fmt.Errorf("demo: %d nodes: want 2 to 50 (one of them rolls back)", opts.Nodes)
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if err := checkNix(); err != nil {
		return err
	}
	if opts.Timeout == 0 {
		opts.Timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	w := &world{opts: opts, gen1: map[string]string{}, gen2: map[string]string{}}
	if err := w.prepareDir(); err != nil {
		return err
	}
	defer w.cleanup(&err)
	w.say("lab demo: an embedded broker, %d local nodes, real Nix\n", opts.Nodes)
	w.say("  work directory   %s\n", w.dir)
	for i := 1; i <= opts.Nodes; i++ {
		w.names = append(w.names, fmt.Sprintf("n%d", i))
	}
	w.bad = w.names[len(w.names)-1]
	if err := w.build(ctx); err != nil {
		return err
	}
	if err := w.startBroker(); err != nil {
		return err
	}
	defer w.broker.Close()
	if w.key, err = proto.GenerateKey("demo-operator"); err != nil {
		return err
	}
	// The operator subscribes before the nodes start: mochi v2.7.9 reads
	// retained topics without a lock while it answers a new subscription,
	// so a subscription made while the nodes publish their first status
	// races with them (seen under -race).
	op, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer op.close()
	stop, err := w.startNodes(ctx)
	if err != nil {
		return err
	}
	defer stop()
	res, err := w.rollout(ctx, op)
	if err != nil {
		return err
	}
	return w.explain(res)
}

func (w *world) say(format string, args ...any) { fmt.Fprintf(w.opts.Out, format, args...) }

func (w *world) prepareDir() error {
	w.dir = w.opts.Dir
	if w.dir == "" {
		d, err := os.MkdirTemp("", "lab-demo-")
		if err != nil {
			return fmt.Errorf("work directory: %w", err)
		}
		w.dir = d
	} else if err := os.MkdirAll(w.dir, 0o755); err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	w.env = nixEnv(w.dir)
	return nil
}

func (w *world) cleanup(errp *error) {
	if w.opts.Keep || *errp != nil {
		w.say("\nThe work directory is kept: %s (node logs, profiles, switch logs, broker data)\n", w.dir)
		return
	}
	_ = os.RemoveAll(w.dir)
}

// build builds generations 1 and 2 of every node in one nix-build call.
func (w *world) build(ctx context.Context) error {
	var systems []system
	for _, n := range w.names {
		systems = append(systems, system{Name: n, Gen: 1}, system{Name: n, Gen: 2, FailHealth: n == w.bad})
	}
	start := time.Now()
	paths, err := buildSystems(ctx, w.dir, w.env, systems)
	if err != nil {
		return err
	}
	for i, n := range w.names {
		w.gen1[n], w.gen2[n] = paths[2*i], paths[2*i+1]
	}
	w.say("  built            %d fake NixOS systems with nix-build in %s\n", len(paths), time.Since(start).Round(time.Millisecond))
	return nil
}

func (w *world) startBroker() error {
	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0", DataDir: filepath.Join(w.dir, "broker"), Logger: w.quiet()})
	if err != nil {
		return err
	}
	if err := b.Start(); err != nil {
		return err
	}
	w.broker = b
	w.say("  broker           mqtt://%s (embedded, persistent in %s)\n", b.Addr(), filepath.Join(w.dir, "broker"))
	return nil
}

// quiet is the logger for components: the demo tells its own story, so
// only warnings and errors of the parts get through.
func (w *world) quiet() *slog.Logger {
	if w.opts.Logger != nil && w.opts.Logger.Enabled(context.Background(), slog.LevelDebug) {
		return w.opts.Logger
	}
	return slog.New(slog.NewTextHandler(w.opts.Out, &slog.HandlerOptions{Level: slog.LevelError}))
}

// installGen1 points a node's fresh profile at generation 1, as if the
// machine had been installed with it.
func (w *world) installGen1(ctx context.Context, name, profile string) error {
	nx, err := nixsys.New(nixsys.Config{Profile: profile, Env: w.env, Logger: w.quiet()})
	if err != nil {
		return err
	}
	if err := nx.SetProfile(ctx, w.gen1[name]); err != nil {
		return fmt.Errorf("install generation 1 on %s: %w", name, err)
	}
	return nil
}

var errUnexpected = errors.New("the demo did not end as expected")
