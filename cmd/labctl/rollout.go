package main

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
	"github.com/spf13/cobra"
)

func newRolloutCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "List, show, cancel, pause, resume and retry rollouts",
		Long: `Every rollout labctl publishes is recorded, step by step, in the rollout
records file (--rollouts-db); an id is never reused. These commands read those
records; show, cancel and resume also read the nodes' live state from the
broker.

A record's state is running while a labctl follows it (or after that labctl
stopped: resume continues it), then the rollout's outcome, the same words as
publish's exit codes: succeeded (0), failed (3), rolled-back (4), pending (5:
followed to the end with targets still offline; they converge when they
connect, and resume or cancel still apply), cancelled (6).`,
	}
	cmd.AddCommand(newRolloutListCmd(g), newRolloutShowCmd(g), newRolloutCancelCmd(g), newRolloutResumeCmd(g), newRolloutPauseCmd(g), newRolloutRetryCmd(g))
	return cmd
}

func newRolloutListCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "List rollouts, newest first: the controller service's and this machine's (--local-controller)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			store, err := openStore(g)
			if err != nil {
				return err
			}
			recs, err := store.List()
			if err != nil {
				return err
			}
			recs = append(recs, serviceRecords(cmd, g)...)
			slices.SortFunc(recs, func(a, b *controller.Record) int { return b.Created.Compare(a.Created) })
			if asJSON {
				return render.WriteJSON(g.out, recs)
			}
			tw := tabwriter.NewWriter(g.out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tSTRATEGY\tTARGETS\tWAVES\tCREATED\tREASON")
			for _, r := range recs {
				strategy := r.Plan.Strategy.Kind
				if strategy == "" {
					strategy = controller.StrategyAll
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d/%d\t%s\t%s\n", r.Plan.ID, r.State, strategy, len(r.Plan.Targets),
					r.Opened, len(r.Waves), r.Created.Local().Format("2006-01-02 15:04"), sayReason(r.Reason))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the records as JSON")
	addClientFlags(g, cmd)
	return cmd
}

// serviceRecords are the controller service's rollouts, if a broker and
// a controller answer (else a note on stderr).
func serviceRecords(cmd *cobra.Command, g *globals) []*controller.Record {
	conn, err := connectTo(cmd.Context(), g, func(proto.Topics) []string { return nil })
	if err != nil {
		fmt.Fprintf(g.errOut, "note: only this machine's records (%s): %v\n", storePath(g), err)
		return nil
	}
	defer conn.close()
	resp, err := conn.request(cmd.Context(), controller.VerbList, &controller.Request{}, requestWait)
	if err != nil {
		fmt.Fprintf(g.errOut, "note: only this machine's records (%s): %v\n", storePath(g), err)
		return nil
	}
	return resp.Records
}

func newRolloutShowCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID [--json]",
		Short: "Show a rollout, with every target's live state",
		Long: `show reads the rollout's record and every target's live retained status:
a target that was offline when the rollout ended and converged since shows
as done (and a pending record then takes its final outcome). A target whose
end was recorded keeps it, even after later rollouts moved it on. The exit
code is the rollout's outcome, as for publish (0 while it is still running).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rec, err := getRecord(g, args[0])
			if err != nil && !errors.Is(err, controller.ErrNoRollout) {
				return err
			}
			conn, cerr := connect(cmd.Context(), g)
			if cerr != nil {
				return cerr
			}
			defer conn.close()
			local := err == nil
			if !local {
				if rec, err = serviceRecord(cmd.Context(), conn, args[0], err); err != nil {
					return err
				}
			}
			res := controller.Progress(rec, conn.fleet)
			if asJSON {
				if err := render.WriteJSON(g.out, struct {
					*controller.Record
					Live *controller.Result `json:"live"`
				}{rec, res}); err != nil {
					return err
				}
			} else {
				state := rec.State
				if rec.Followed() {
					state = res.Outcome.Phase() // pending targets may have converged since
				}
				fmt.Fprintf(g.out, "rollout %s: %s, created %s, wave %d of %d opened\n", rec.Plan.ID, state,
					rec.Created.Local().Format(time.DateTime), rec.Opened, len(rec.Waves))
				if err := render.WriteResult(g.out, forPeople(res)); err != nil {
					return err
				}
			}
			if !rec.Followed() {
				return nil // still followed, or stopped before its end (resume continues it)
			}
			if local && rec.State == proto.RolloutPending && res.Outcome != controller.OutcomePending {
				// Its last targets converged since: the record says so now.
				if err := updateOutcome(g, rec, res); err != nil {
					g.logger.Warn("record the rollout's outcome", "rollout", rec.Plan.ID, "err", err)
				}
			}
			if code := render.ExitCode(res.Outcome); code != 0 {
				return exitErr{code: code, err: fmt.Errorf("rollout %s %s", res.Rollout, res.Outcome)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the record and the live result as JSON")
	addClientFlags(g, cmd)
	return cmd
}

func newRolloutCancelCmd(g *globals) *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "cancel ID [--key FILE]",
		Short: "Stop a rollout: no further wave opens, targets not started are cancelled",
		Long: `cancel stops a running rollout, whether a labctl is still following it or
not: the gates of its groups say cancelled (targets waiting for their wave
report cancelled), targets online that have not started get a cancel command,
and the retained desired state of every target that has not started is
cleared (an offline one finds nothing when it wakes). Targets already
activating finish or roll back: a node refuses a cancel once its system
profile may have moved. A labctl publish following the rollout sees the
cancel and stops.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rec, err := getRecord(g, args[0])
			if errors.Is(err, controller.ErrNoRollout) {
				return askService(cmd, g, controller.VerbCancel, args[0], err, "cancelled")
			}
			if err != nil {
				return err
			}
			if err := canContinue(rec, keyFile); err != nil {
				return err
			}
			store, err := openStore(g)
			if err != nil {
				return err
			}
			ss, err := openSession(cmd, g, keyFile)
			if err != nil {
				return err
			}
			defer ss.close()
			if err := ss.ctl.Cancel(ss.ctx, rec, controller.Options{Key: ss.key, Store: store, Logger: g.logger}); err != nil {
				if isUsage(err) {
					return usageError{err}
				}
				return err
			}
			fmt.Fprintf(g.out, "rollout %s cancelled\n", rec.Plan.ID)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "operator signing key `FILE` for the gates and the cancel command")
	addClientFlags(g, cmd)
	return cmd
}

func newRolloutResumeCmd(g *globals) *cobra.Command {
	var keyFile string
	var asJSON bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "resume ID [--key FILE]",
		Short: "Continue a paused rollout, or one whose driver stopped (Ctrl-C, crash of a --local-controller publish)",
		Long: `resume picks a rollout up where its record says it got: it publishes
whatever was not published yet (and again what the broker lost), reopens the
waves already opened and follows the rest exactly as publish would, with the
same output and exit codes. A pending rollout (publish exited 5) is followed
again for one more --wave-deadline of its plan. A rollout signed with a key
needs that key (--key): nodes that pin keys reject unsigned gates.

A rollout the controller service keeps is resumed by the service: a paused
one opens its next wave again, a pending one is followed for one more wave
deadline (no --key needed: the service signs its gates).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout < 0 {
				return usageError{fmt.Errorf("--timeout %s is negative (0 follows until every wave is done)", timeout)}
			}
			rec, err := getRecord(g, args[0])
			if errors.Is(err, controller.ErrNoRollout) {
				return askService(cmd, g, controller.VerbResume, args[0], err, "resumed: the controller drives it")
			}
			if err != nil {
				return err
			}
			if err := canContinue(rec, keyFile); err != nil {
				return err
			}
			store, err := openStore(g)
			if err != nil {
				return err
			}
			ss, err := openSession(cmd, g, keyFile)
			if err != nil {
				return err
			}
			defer ss.close()
			rep := newReporter(g, asJSON)
			defer rep.stop()
			res, err := ss.ctl.Resume(ss.ctx, rec, rep.options(controller.Options{Key: ss.key, Store: store, Timeout: timeout, Logger: g.logger}))
			switch {
			case err != nil && ss.ctx.Err() != nil:
				return interrupted(rec.Plan.ID, keyFile, err)
			case isUsage(err):
				return usageError{err}
			case err != nil:
				return err
			}
			return rep.result(res, keyFile)
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyFile, "key", "", "operator signing key `FILE` for what is still to publish")
	f.BoolVar(&asJSON, "json", false, "print JSON lines, as publish --json")
	f.DurationVar(&timeout, "timeout", 0, "stop following after this long; 0 = until every wave is done")
	addClientFlags(g, cmd)
	return cmd
}

// canContinue refuses, before connecting, to resume or cancel a rollout
// that is over, or a signed one without a key (exit 2).
func canContinue(rec *controller.Record, keyFile string) error {
	if err := rec.CanContinue(keyFile != ""); err != nil {
		return usageError{withFlags(err)}
	}
	return nil
}

// serviceRecord asks the controller service for a rollout this labctl
// does not keep; notLocal is the local store's answer, returned when no
// controller answers either.
func serviceRecord(ctx context.Context, conn *connection, id string, notLocal error) (*controller.Record, error) {
	resp, err := conn.request(ctx, controller.VerbShow, &controller.Request{Rollout: id}, requestWait)
	var none errNoController
	switch {
	case errors.As(err, &none):
		return nil, fmt.Errorf("%w; and %w", notLocal, err)
	case err != nil:
		return nil, err
	case resp.Record == nil:
		return nil, fmt.Errorf("the controller's answer about %s carries no record", id)
	}
	return resp.Record, nil
}

// askService sends a cancel or resume of a rollout the controller
// service keeps.
func askService(cmd *cobra.Command, g *globals, verb, id string, notLocal error, done string) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	conn, err := connect(ctx, g)
	if err != nil {
		return err
	}
	defer conn.close()
	if _, err := serviceRecord(ctx, conn, id, notLocal); err != nil {
		return err
	}
	if _, err := conn.request(ctx, verb, &controller.Request{Rollout: id}, requestWait); err != nil {
		return err
	}
	fmt.Fprintf(g.out, "rollout %s %s\n", id, done)
	return nil
}

func getRecord(g *globals, id string) (*controller.Record, error) {
	if err := proto.ValidID(id); err != nil {
		return nil, usageError{fmt.Errorf("rollout id %q: %w", id, err)}
	}
	store, err := openStore(g)
	if err != nil {
		return nil, err
	}
	rec, err := store.Get(id)
	if errors.Is(err, controller.ErrNoRollout) {
		return nil, usageError{fmt.Errorf("%w (records are in %s; see labctl rollout list)", err, storePath(g))}
	}
	return rec, err
}

func optionalKey(g *globals, file string) (*proto.PrivateKey, error) {
	if file == "" {
		fmt.Fprintln(g.errOut, "warning: no --key: what this publishes is unsigned; nodes that pin keys will reject it")
		return nil, nil
	}
	k, err := readPrivateKey(file)
	if err != nil {
		return nil, usageError{fmt.Errorf("--key: %w", err)}
	}
	return &k, nil
}

// updateOutcome records the outcome of a pending rollout whose last
// targets ended since it was followed.
func updateOutcome(g *globals, rec *controller.Record, res *controller.Result) error {
	store, err := openStore(g)
	if err != nil {
		return err
	}
	up := *rec
	up.State, up.Result, up.Updated = res.Outcome.Phase(), res, time.Now()
	return store.Save(&up)
}

func newRolloutPauseCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pause ID",
		Short: "Stop opening waves of a rollout the controller service drives (resume goes on)",
		Long: `pause asks the controller service to open no further wave of the rollout:
the wave in progress finishes, the next one waits — past its deadline too —
until labctl rollout resume ID. The record and the retained rollout state
say who paused it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := proto.ValidID(args[0]); err != nil {
				return usageError{fmt.Errorf("rollout id %q: %w", args[0], err)}
			}
			return askService(cmd, g, controller.VerbPause, args[0], fmt.Errorf("%w: %q", controller.ErrNoRollout, args[0]), "paused: no further wave opens until labctl rollout resume "+args[0])
		},
	}
	addClientFlags(g, cmd)
	return cmd
}

func newRolloutRetryCmd(g *globals) *cobra.Command {
	var pf publishFlags
	cmd := &cobra.Command{
		Use:   "retry ID [--key FILE]",
		Short: "Publish a rollout again to its targets that failed (failed, rolled back, timed out, rejected)",
		Long: `retry starts a new rollout, <ID>-retry (then -retry-2, ...), with the plan of
rollout ID — the same systems, strategy, thresholds and timeouts — for the
targets whose end was a failure: failed, rolled back, timed out, rejected or
a failed rollback. Targets that succeeded, are still pending or were
cancelled are left alone. Like publish it signs every Desired with --key and
submits the rollout to the controller service (--local-controller: drives
it from here), with publish's output and exit codes.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runRetry(cmd, g, args[0], pf) },
	}
	f := cmd.Flags()
	f.StringVar(&pf.keyFile, "key", "", "operator signing key `FILE`")
	f.BoolVar(&pf.detach, "detach", false, "return once the controller service accepted the rollout")
	f.BoolVar(&pf.asJSON, "json", false, "print JSON lines, as publish --json")
	f.DurationVar(&pf.timeout, "timeout", 0, "stop following after this long")
	f.Bool("local-controller", false, "drive the new rollout from this process, without a controller service")
	addClientFlags(g, cmd)
	return cmd
}

func runRetry(cmd *cobra.Command, g *globals, id string, pf publishFlags) error {
	mustBind(g.v, keyLocalController, cmd, "local-controller")
	if pf.timeout < 0 {
		return usageError{fmt.Errorf("--timeout %s is negative (0 follows until every wave is done)", pf.timeout)}
	}
	rec, err := getRecord(g, id)
	if err != nil && !errors.Is(err, controller.ErrNoRollout) {
		return err
	}
	ss, serr := openSession(cmd, g, pf.keyFile)
	if serr != nil {
		return serr
	}
	defer ss.close()
	if err != nil {
		if rec, err = serviceRecord(ss.ctx, ss.conn, id, err); err != nil {
			return err
		}
	}
	plan, err := controller.RetryPlan(rec, controller.Progress(rec, ss.conn.fleet), func(id string) bool { return rolloutIDTaken(g, ss, id) })
	if err != nil {
		return usageError{err}
	}
	fmt.Fprintf(g.errOut, "retrying rollout %s as %s for %d targets: %s\n", id, plan.ID, len(plan.Targets), strings.Join(plan.Nodes(), " "))
	if !g.v.GetBool(keyLocalController) {
		svc, err := ss.conn.controllerInfo(ss.ctx)
		if err != nil {
			return err
		}
		return submit(ss, g, svc, plan, pf)
	}
	store, err := openStore(g)
	if err != nil {
		return err
	}
	rep := newReporter(g, pf.asJSON)
	defer rep.stop()
	out, err := ss.ctl.Run(ss.ctx, plan, rep.options(controller.Options{Key: ss.key, Timeout: pf.timeout, Logger: g.logger, Store: store}))
	if err != nil {
		return err
	}
	return rep.result(out, pf.keyFile)
}

// rolloutIDTaken reports whether the broker (retained state) or the local
// records know a rollout id.
func rolloutIDTaken(g *globals, ss *session, id string) bool {
	if _, ok := ss.conn.fleet.Rollout(id); ok {
		return true
	}
	_, err := getRecord(g, id)
	return err == nil
}
