package main

import (
	"errors"
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/lab-fleet/lab/internal/demo"
	"github.com/spf13/cobra"
)

func newDemoCmd(g *globals) *cobra.Command {
	opts := demo.Options{}
	cmd := &cobra.Command{
		Use:   "demo [--nodes N]",
		Short: "Run a real rollout on this machine: embedded broker, N local nodes, real Nix",
		Long: `demo shows the whole path on one machine, with nothing to configure:

  1. builds two generations of a fake NixOS system per node with the local
     Nix (real nix-build; the "systems" are tiny /bin/sh derivations);
  2. starts the embedded MQTT broker on a free loopback port;
  3. starts N nodes running the real labd code, each with its own system
     profile and state directory, installed with generation 1;
  4. publishes a signed rollout of generation 2 to every node. The last
     node's generation 2 fails its health check, so that node rolls itself
     back to generation 1 while the others succeed;
  5. prints what every node did, then stops everything.

It needs nix-build, nix-store and nix-env (Debian: apt-get install nix-bin).
Exit code 0 means the demo behaved as described (including the rollback).`,
		Example: `  labctl demo
  labctl demo --nodes 5 --keep     # keep the work directory to look around`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Nodes < 2 || opts.Nodes > 50 {
				return usageError{errors.New("--nodes must be between 2 and 50")}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			opts.Out, opts.Logger = g.out, g.logger
			err := demo.Run(ctx, opts)
			if errors.Is(err, demo.ErrNoNix) {
				fmt.Fprintln(g.errOut, err)
				return exitErr{code: exitError, err: errors.New("demo needs Nix")}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&opts.Nodes, "nodes", 3, "number of local nodes (2-50)")
	f.StringVar(&opts.Dir, "dir", "", "work `DIR` (default: a new temporary directory)")
	f.BoolVar(&opts.Keep, "keep", false, "keep the work directory (profiles, logs, state) after the demo")
	f.DurationVar(&opts.Timeout, "timeout", 3*time.Minute, "give up after this long")
	return cmd
}
