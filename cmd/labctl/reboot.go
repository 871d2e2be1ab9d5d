package main

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
	"github.com/spf13/cobra"
)

// followJob polls the controller's record of a reboot job until it ends,
// reporting each machine's result as it comes.
func followJob(ctx context.Context, conn *connection, id string, progress func(controller.RebootResult)) ([]controller.RebootResult, error) {
	seen := 0
	for {
		resp, err := conn.request(ctx, controller.VerbJob, &controller.Request{Rollout: id}, requestWait)
		if err != nil {
			return nil, err
		}
		j := resp.Job
		for ; seen < len(j.Results); seen++ {
			progress(j.Results[seen])
		}
		switch j.State {
		case controller.JobDone:
			return j.Results, nil
		case controller.JobInterrupted:
			return j.Results, fmt.Errorf("reboot job %s was interrupted: %s", id, j.Reason)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stopped following reboot job %s (%w); the controller goes on with it: `labctl reboot --job %s` follows it again", id, ctx.Err(), id)
		case <-time.After(time.Second):
		}
	}
}

func newRebootCmd(g *globals) *cobra.Command {
	var on, keyFile, id, job string
	var deadline time.Duration
	var asJSON, detach bool
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

The controller service runs the sequence (a job, signed with its own key:
the machines must pin it in controller_keys), so it goes on when this
terminal goes away; reboot follows the job until it ends (--detach returns
at once; labctl reboot --job ID follows it again). --local-controller runs
the sequence from this process, signed with --key.

Exit codes: 0 every machine rebooted and came back healthy; 3 one failed,
refused or did not come back in time; 5 some were skipped because they were
offline.`,
		Example: `  labctl reboot --key operator.key --on @servers
  labctl reboot --key operator.key --on nas,router --deadline 20m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			mustBind(g.v, keyLocalController, cmd, "local-controller")
			if job != "" {
				return followAgain(cmd, g, job, asJSON)
			}
			if on == "" {
				return usageError{errors.New("--on is required: @group or node names")}
			}
			if _, err := parseOn(on); err != nil { // before connecting
				return usageError{err}
			}
			if deadline <= 0 {
				return usageError{fmt.Errorf("--deadline %s: want a positive duration, e.g. 10m", deadline)}
			}
			if id != "" {
				if err := proto.ValidID(id); err != nil {
					return usageError{fmt.Errorf("--id %q: %w", id, err)}
				}
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
			progress := func(r controller.RebootResult) {
				if !asJSON {
					fmt.Fprintf(g.errOut, "%s  %-8s %s (%s)\n", time.Now().Format("15:04:05"), r.Node, r.State, r.Took.Round(time.Second))
				}
			}
			var res []controller.RebootResult
			if g.v.GetBool(keyLocalController) {
				if !asJSON {
					fmt.Fprintf(g.errOut, "rebooting in this order: %s\n", strings.Join(ctl.RebootOrder(nodes), " "))
				}
				if res, err = ctl.Reboot(ctx, nodes, controller.RebootOptions{Key: key, Deadline: deadline, Progress: progress}); err != nil {
					return err
				}
			} else {
				if id == "" {
					id = "reboot-" + strings.TrimPrefix(controller.NewID(time.Now()), "r-")
				}
				resp, err := ss.conn.request(ctx, controller.VerbReboot, &controller.Request{Reboot: &controller.RebootJob{ID: id, Nodes: nodes, Deadline: deadline}}, requestWait)
				if err != nil {
					return err
				}
				if !asJSON {
					fmt.Fprintf(g.errOut, "reboot job %s accepted by the controller service; in this order: %s\n", id, strings.Join(resp.Job.Order, " "))
				}
				if detach {
					fmt.Fprintf(g.out, "reboot job %s: the controller runs it; `labctl reboot --job %s` follows it\n", id, id)
					return nil
				}
				if res, err = followJob(ctx, ss.conn, id, progress); err != nil {
					return err
				}
			}
			return reportReboot(g, res, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&on, "on", "", "machines: @group or node names, comma-separated")
	f.StringVar(&keyFile, "key", "", "operator signing key `FILE` for the reboot commands")
	f.DurationVar(&deadline, "deadline", 10*time.Minute, "per machine: how long to wait for it to come back healthy")
	f.BoolVar(&asJSON, "json", false, "print the results as JSON")
	f.StringVar(&id, "id", "", "the reboot job's `ID` (default reboot-<date>-<time>-<random>)")
	f.BoolVar(&detach, "detach", false, "return once the controller service accepted the job")
	f.Bool("local-controller", false, "run the sequence from this process, signed with --key, without a controller service")
	f.StringVar(&job, "job", "", "follow the controller's reboot job `ID` again (no --on)")
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

// reportReboot prints the results of an ordered reboot and maps them to
// the exit code.
func reportReboot(g *globals, res []controller.RebootResult, asJSON bool) error {
	var err error
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
}

// followAgain follows a reboot job the controller runs (--job).
func followAgain(cmd *cobra.Command, g *globals, id string, asJSON bool) error {
	if err := proto.ValidID(id); err != nil {
		return usageError{fmt.Errorf("--job %q: %w", id, err)}
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	conn, err := connectTo(ctx, g, func(proto.Topics) []string { return nil })
	if err != nil {
		return err
	}
	defer conn.close()
	res, err := followJob(ctx, conn, id, func(r controller.RebootResult) {
		if !asJSON {
			fmt.Fprintf(g.errOut, "%-8s %s (%s)\n", r.Node, r.State, r.Took.Round(time.Second))
		}
	})
	if err != nil {
		return err
	}
	return reportReboot(g, res, asJSON)
}
