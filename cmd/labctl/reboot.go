package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/spf13/cobra"
)

func newRebootCmd(g *globals) *cobra.Command {
	var on, keyFile string
	var deadline time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "reboot --on @group|node,... [--key FILE]",
		Short: "Reboot machines one at a time, in reboot order, each back healthy before the next",
		Long: `reboot sends each selected machine a signed reboot command, one at a time,
lowest reboot order first (labd's machine.reboot_order; then by name). A
machine counts as back when it reports a new boot id, is online, and every
one of its health checks ran after the reboot and passed; then its
machine.reboot_delay passes before the next one. A machine that is not back
healthy within --deadline stops the sequence: the others are skipped. A
machine that refuses the reboot (it is busy with a rollout, or the command's
signature or expiry is refused) or whose reboot command fails says so at
once (labd acknowledges the command) and stops the sequence too. An
offline machine is skipped.

labd reboots with its reboot_command (default: systemctl reboot).

Exit codes: 0 every machine rebooted and came back healthy; 3 one failed,
refused or did not come back in time; 5 some were skipped because they were
offline.`,
		Example: `  labctl reboot --key operator.key --on @servers
  labctl reboot --key operator.key --on nas,router --deadline 20m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if on == "" {
				return usageError{errors.New("--on is required: @group or node names")}
			}
			if _, err := parseOn(on); err != nil { // before connecting
				return usageError{err}
			}
			ss, err := openSession(cmd, g, keyFile)
			if err != nil {
				return err
			}
			defer ss.close()
			nodes, err := selectNodes(on, ss.conn.fleet)
			if err != nil {
				return usageError{err}
			}
			ctx, key, ctl := ss.ctx, ss.key, ss.ctl
			if !asJSON {
				fmt.Fprintf(g.errOut, "rebooting in this order: %s\n", strings.Join(ctl.RebootOrder(nodes), " "))
			}
			res, err := ctl.Reboot(ctx, nodes, controller.RebootOptions{Key: key, Deadline: deadline,
				Progress: func(r controller.RebootResult) {
					if !asJSON {
						fmt.Fprintf(g.errOut, "%s  %-8s %s (%s)\n", time.Now().Format("15:04:05"), r.Node, r.State, r.Took.Round(time.Second))
					}
				}})
			if err != nil {
				return err
			}
			if asJSON {
				err = render.WriteJSON(g.out, res)
			} else {
				tw := tabwriter.NewWriter(g.out, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NODE\tRESULT\tTOOK\tDETAIL")
				for _, r := range res {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Node, r.State, r.Took.Round(100*time.Millisecond), r.Detail)
				}
				err = tw.Flush()
			}
			if err != nil {
				return err
			}
			code := 0
			for _, r := range res {
				switch r.State {
				case controller.RebootFailed, controller.RebootRefused, controller.RebootTimeout:
					code = 3
				case controller.RebootSkipped:
					if code == 0 {
						code = 5
					}
				}
			}
			if code != 0 {
				return exitErr{code: code, err: errors.New("not every machine rebooted and came back healthy")}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&on, "on", "", "machines: @group or node names, comma-separated")
	f.StringVar(&keyFile, "key", "", "operator signing key `FILE` for the reboot commands")
	f.DurationVar(&deadline, "deadline", 10*time.Minute, "per machine: how long to wait for it to come back healthy")
	f.BoolVar(&asJSON, "json", false, "print the results as JSON")
	addClientFlags(g, cmd)
	return cmd
}

// selectNodes resolves "@group,node" against the fleet view.
func selectNodes(on string, fleet *controller.Fleet) ([]string, error) {
	terms, err := parseOn(on)
	if err != nil {
		return nil, err
	}
	return resolve(terms, fleet.Members, "no node has reported membership of this group")
}
