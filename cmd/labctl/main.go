// Command labctl is the operator's CLI: it runs the embedded broker and
// drives rollouts (DESIGN §2, §10).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/pprof"

	"github.com/lab-fleet/lab/node/nixsys"
	"github.com/spf13/cobra"
)

func main() {
	// labctl demo runs activations in-process; their detached helper is
	// this same binary.
	nixsys.MaybeRunHelper()
	stop := profileCPU(os.Getenv("LAB_CPUPROFILE"))
	code := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// profileCPU writes a CPU profile of the whole command to file (the
// LAB_CPUPROFILE environment variable, for diagnosing a slow command at
// fleet scale: go tool pprof FILE); "" profiles nothing.
func profileCPU(file string) (stop func()) {
	if file == "" {
		return func() {}
	}
	f, err := os.Create(file)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "labctl: LAB_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// run executes labctl with args and returns the process exit code.
func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	root := newRootCmd(newGlobals(out, errOut))
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(errOut)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(errOut, "labctl: %v\n", withFlags(err))
		return exitCode(err)
	}
	return 0
}

func newRootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "labctl",
		Short: "NixOS fleet rollouts over MQTT",
		Long: `labctl is the operator's side of lab: it runs the broker, signs and
publishes rollouts, and shows live fleet state. Every machine runs labd,
which applies what is published for it, checks its health and rolls back
by itself.

New here? Run "labctl demo": a broker, three local nodes and a real rollout
(one node rolls back) on this machine, with nothing to configure.

Then, for a real fleet:
  labctl key generate --out operator.key    # pin the printed key in every labd
  labctl broker --data-dir /var/lib/lab-broker
  labctl publish --key operator.key --on @web --toplevel /nix/store/...
  labctl status`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return g.init(cmd)
		},
	}
	pf := root.PersistentFlags()
	pf.String("config", "", "config `FILE` (YAML or TOML); every key can also be set as LAB_<KEY> (docs/labctl.md)")
	pf.String("log-level", "info", "log level: debug, info, warn or error")
	pf.String("rollouts-db", "", "rollout records `FILE` (default $XDG_STATE_HOME/lab/rollouts.db or ~/.local/state/lab/rollouts.db; env LAB_ROLLOUTS_DB)")
	root.AddCommand(newBrokerCmd(g), newControllerCmd(g))
	root.AddCommand(newKeyCmd(g))
	root.AddCommand(newPublishCmd(g), newStatusCmd(g), newWatchCmd(g))
	root.AddCommand(newRolloutCmd(g), newRollbackCmd(g), newRebootCmd(g), newInventoryCmd(g), newNodeCmd(g), newACLCmd(g), newPKICmd(g))
	root.AddCommand(newDemoCmd(g))
	root.AddCommand(newSecretCmd(g))
	markUsageErrors(root)
	return root
}
