package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/controller/flake"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
	"github.com/spf13/cobra"
)

type publishFlags struct {
	toplevels []string
	flake     string
	copyTo    string
	on        string
	action    string
	reboot    string
	timeout   time.Duration
	keyFile   string
	id        string
	noWait    bool
	asJSON    bool
	detach    bool
	local     bool
	at        string
	window    string

	allowUnseen bool

	// configurations is the attribute path of the flake's machines.
	configurations string

	strategy     string
	batch        string
	canary       string
	maxFailures  string
	minExecuted  int
	waveDeadline time.Duration
	onFailure    string

	fetchTimeout, activateTimeout, confirmTimeout time.Duration

	// rollback: the targets are the selected machines' previous systems
	// (labctl rollback), not --toplevel or --flake.
	rollback bool
}

func newPublishCmd(g *globals) *cobra.Command {
	var pf publishFlags
	cmd := &cobra.Command{
		Use:   "publish --toplevel NODE=/nix/store/... [--on @group|node,...] [--key FILE]",
		Short: "Roll a new system out to nodes and follow it to the end",
		Long: `publish signs a Desired state for every target with the operator key and
submits the rollout to the controller service (labctl broker runs one beside
the embedded broker; labctl controller beside an external one), which checks
the signatures, keeps the rollout and drives it to its end: the Desired
states are retained (a node that is asleep finds it when it wakes), waves
open one after another, thresholds halt it. publish then follows the
rollout's retained state until it ends or --timeout passes, printing a line
per change and a summary table. Ctrl-C, a crash or a sleeping laptop only
stop the following: labctl rollout show ID shows it later; --detach returns
as soon as the controller accepted it. When no controller answers, publish
says so within seconds; --local-controller drives the rollout from this
process instead (it then stops when this process stops).

Waves: --strategy all (default) opens every target at once; rolling opens
--batch N (or P%) targets per wave; canary opens --canary N (default 1)
first, then the rest (in --batch waves when given). Targets are ordered by
their dependencies (a machine after what it depends on), then by reboot
order, then by name. A wave opens the next when every target in it has
finished or --wave-deadline passed (offline targets stay pending and
converge when they wake; they are never failures). One failure more than
--max-failures (N, or P% once --min-executed targets finished) halts the
rollout: no further wave opens, and with --on-failure rollback the targets
that already switched go back to their previous system.

Exit codes: 0 every target succeeded; 3 some failed (including timed out,
rejected or a failed rollback); 4 some rolled back to their previous system;
5 some are offline or still busy — they converge when they connect;
6 cancelled (labctl rollout cancel) before every target ran;
1 the command itself failed; 2 bad usage.`,
		Example: `  # one system per node
  labctl publish --key operator.key --toplevel n1=/nix/store/...-nixos-system-n1 --toplevel n2=/nix/store/...
  # the same system for every member of a group (known from retained status)
  labctl publish --key operator.key --on @web --toplevel /nix/store/...-nixos-system-web
  # one canary, then batches of 25%; stop at the second failure
  labctl publish --key operator.key --on @servers --toplevel /nix/store/... \
      --strategy canary --batch 25% --max-failures 1
  # every machine of a flake whose fleet lives under another attribute (clan, flake-parts)
  labctl publish --key operator.key --flake . --configurations clan.nixosConfigurations
  # publish and return at once; follow later with labctl status
  labctl publish --key operator.key --toplevel n1=/nix/store/... --no-wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runPublish(cmd, g, pf) },
	}
	f := cmd.Flags()
	f.StringArrayVar(&pf.toplevels, "toplevel", nil, "`NODE=PATH` (repeatable), or one bare store PATH for every node selected by --on")
	f.StringVar(&pf.flake, "flake", "", "take machines and systems from this flake `REF`: one nix eval, one nix build (--on selects; default every machine)")
	f.StringVar(&pf.configurations, "configurations", flake.DefaultConfigurations, "with --flake: "+configurationsUsage)
	f.StringVar(&pf.copyTo, "copy-to", "", "with --flake: nix copy the built systems to this binary cache `URL` (the machines substitute from it)")
	f.StringVar(&pf.on, "on", "", "targets: @group or node names, comma-separated (e.g. @web,db1)")
	pf.define(g, cmd)
	return cmd
}

// define adds the flags of a rollout's plan, signing and following, which
// publish and rollback share.
func (pf *publishFlags) define(g *globals, cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&pf.action, "action", "switch", "switch-to-configuration action: switch, boot or test")
	f.StringVar(&pf.reboot, "reboot", "", "with --action boot: always (default) reboots into the new system and confirms its health after the reboot, never only sets the boot entry")
	f.DurationVar(&pf.timeout, "timeout", 0, "stop following after this long; 0 = until every wave is done (each waits at most --wave-deadline)")
	f.StringVar(&pf.keyFile, "key", "", "operator signing key `FILE` (labctl key generate); without it Desired states are unsigned")
	f.StringVar(&pf.id, "id", "", "rollout `ID` (default r-<date>-<time>-<random>)")
	f.BoolVar(&pf.noWait, "no-wait", false, "publish and exit without following (with the controller service: as --detach)")
	f.StringVar(&pf.at, "at", "", "schedule the rollout: nothing is published before `TIME` (RFC 3339, e.g. 2026-12-03T02:00:00+01:00, or \"2026-12-03 02:00\" in this machine's time zone)")
	f.StringVar(&pf.window, "window", "", "maintenance window `HH:MM-HH:MM` in the controller's time zone (e.g. 02:00-05:00; 22:00-04:00 runs over midnight): outside it no wave opens, a wave in progress finishes")
	f.BoolVar(&pf.detach, "detach", false, "return once the controller service accepted the rollout and published its first wave; it drives the rest")
	f.BoolVar(&pf.local, "local-controller", false, "drive the rollout from this process, without a controller service (it stops when this process stops; config local_controller, env LAB_LOCAL_CONTROLLER)")
	mustBind(g.v, keyLocalController, cmd, "local-controller")
	f.BoolVar(&pf.asJSON, "json", false, "print JSON lines on stdout: one per wave, halt and node change, then the result")
	f.StringVar(&pf.strategy, "strategy", "all", "waves: all, rolling or canary")
	f.StringVar(&pf.batch, "batch", "", "wave size `N|P%` for rolling (and canary after the canaries)")
	f.StringVar(&pf.canary, "canary", "", "canary wave size `N|P%` (default 1)")
	f.StringVar(&pf.maxFailures, "max-failures", "0", "failures tolerated before halting, `N|P%`")
	f.IntVar(&pf.minExecuted, "min-executed", 5, "finished targets needed before a percentage --max-failures counts")
	f.DurationVar(&pf.waveDeadline, "wave-deadline", controller.DefaultWaveDeadline, "how long a wave waits for offline or busy targets")
	f.DurationVar(&pf.fetchTimeout, "fetch-timeout", 0, "per node: realising the closure (0 = the node's own default)")
	f.DurationVar(&pf.activateTimeout, "activate-timeout", 0, "per node: switch-to-configuration (0 = the node's default)")
	f.DurationVar(&pf.confirmTimeout, "confirm-timeout", 0, "per node: reconnecting and passing the checks after activation (0 = the node's default)")
	f.StringVar(&pf.onFailure, "on-failure", "halt", "on halt: halt (leave switched targets) or rollback (switch them back)")
	f.BoolVar(&pf.allowUnseen, "allow-unseen", false, "publish to nodes this broker has never seen (no status or presence yet: a new machine, or a typo)")
	addClientFlags(g, cmd)
}

// plan builds the rollout plan from the flags (targets come later).
func (pf publishFlags) plan() (controller.Plan, error) {
	plan := controller.Plan{ID: pf.id, Action: proto.Action(pf.action), Reboot: proto.RebootPolicy(pf.reboot), Targets: map[string]string{},
		Strategy: controller.Strategy{Kind: pf.strategy}, MinExecuted: pf.minExecuted,
		WaveDeadline: pf.waveDeadline, OnFailure: pf.onFailure,
		Timeouts: proto.Timeouts{Fetch: seconds(pf.fetchTimeout), Activate: seconds(pf.activateTimeout), Confirm: seconds(pf.confirmTimeout)}}
	if plan.ID == "" {
		plan.ID = controller.NewID(time.Now())
	}
	for _, sz := range []struct {
		flag, val string
		dst       *controller.Size
	}{{"--batch", pf.batch, &plan.Strategy.Batch}, {"--canary", pf.canary, &plan.Strategy.Canary}, {"--max-failures", pf.maxFailures, &plan.MaxFailures}} {
		if sz.val == "" {
			continue
		}
		v, err := controller.ParseSize(sz.val)
		if err != nil {
			return plan, fmt.Errorf("%s %w", sz.flag, err)
		}
		*sz.dst = v
	}
	if pf.at != "" {
		t, err := parseAt(pf.at)
		if err != nil {
			return plan, err
		}
		plan.NotBefore = t
	}
	if pf.window != "" {
		w, err := controller.ParseWindow(pf.window)
		if err != nil {
			return plan, fmt.Errorf("--window %w", err)
		}
		plan.Window = w
	}
	if pf.batch != "" && pf.strategy == controller.StrategyAll {
		return plan, errors.New("--batch needs --strategy rolling or canary")
	}
	if pf.canary != "" && pf.strategy != controller.StrategyCanary {
		return plan, errors.New("--canary needs --strategy canary")
	}
	return plan, nil
}

func runPublish(cmd *cobra.Command, g *globals, pf publishFlags) error {
	plan, err := pf.plan()
	if err != nil {
		return usageError{err}
	}
	tl, err := pf.check(plan) // a typo fails before the connection, not after
	if err != nil {
		return usageError{err}
	}
	ss, err := openSession(cmd, g, pf.keyFile)
	if err != nil {
		return err
	}
	defer ss.close()
	ctx, conn := ss.ctx, ss.conn
	local := g.v.GetBool(keyLocalController)
	var svc *controller.Info
	if !local { // before building: say at once that nobody would drive it
		if svc, err = conn.controllerInfo(ctx); err != nil {
			return err
		}
	}
	if pf.flake != "" {
		if err := flakeTargets(ctx, g, &plan, pf); err != nil {
			return err
		}
	} else if pf.rollback {
		if err := rollbackTargets(g, &plan, pf, conn.fleet); err != nil {
			return usageError{err}
		}
	} else if err := resolveTargets(&plan, pf, tl, conn.fleet); err != nil {
		return usageError{err}
	}
	if err := plan.Validate(); err != nil {
		return usageError{err}
	}
	if err := checkSeen(g, plan, conn.fleet, pf.allowUnseen); err != nil {
		return err
	}
	if !local {
		return submit(ss, g, svc, plan, pf)
	}
	store, err := openStore(g)
	if err != nil {
		return err
	}
	rep := newReporter(g, pf.asJSON)
	defer rep.stop()
	res, err := ss.ctl.Run(ctx, plan, rep.options(controller.Options{
		Key: ss.key, Timeout: pf.timeout, NoWait: pf.noWait, Logger: g.logger, Store: store}))
	switch {
	case isUsage(err):
		return usageError{err}
	case err != nil && ctx.Err() != nil:
		return interrupted(plan.ID, pf.keyFile, err)
	case err != nil:
		return err
	}
	if pf.noWait {
		if pf.asJSON {
			return render.WriteJSON(g.out, map[string]string{"rollout": plan.ID})
		}
		fmt.Fprintf(g.out, "rollout %s published to %d nodes; follow it with `labctl rollout show %s`\n", plan.ID, len(plan.Targets), plan.ID)
		return nil
	}
	return rep.result(res, pf.keyFile)
}

// check refuses, before anything connects, what no broker could make
// right: every flag is read and the plan built from them is validated with
// the targets --toplevel names (or a stand-in where --on or --flake choose
// them later), each error naming its flag.
func (pf publishFlags) check(plan controller.Plan) (toplevels, error) {
	if pf.flake != "" && len(pf.toplevels) > 0 {
		return toplevels{}, errors.New("--flake and --toplevel exclude each other")
	}
	if pf.flake == "" && pf.configurations != "" && pf.configurations != flake.DefaultConfigurations {
		return toplevels{}, errors.New("--configurations goes with --flake")
	}
	if pf.flake != "" {
		if _, err := flake.ParseAttrPath(pf.configurations); err != nil {
			return toplevels{}, fmt.Errorf("--configurations: %w", err)
		}
	}
	if pf.on != "" {
		if _, err := parseOn(pf.on); err != nil {
			return toplevels{}, err
		}
	}
	for _, d := range []struct {
		flag string
		val  time.Duration
	}{{"--timeout", pf.timeout}, {"--wave-deadline", pf.waveDeadline}, {"--fetch-timeout", pf.fetchTimeout},
		{"--activate-timeout", pf.activateTimeout}, {"--confirm-timeout", pf.confirmTimeout}} {
		if d.val < 0 {
			return toplevels{}, fmt.Errorf("%s %s is negative (0 means the default)", d.flag, d.val)
		}
	}
	if pf.minExecuted < 0 {
		return toplevels{}, fmt.Errorf("--min-executed %d is negative", pf.minExecuted)
	}
	if err := proto.ValidID(plan.ID); err != nil {
		return toplevels{}, fmt.Errorf("--id %q: %w", plan.ID, err)
	}
	if !plan.Action.Valid() {
		return toplevels{}, fmt.Errorf("--action %q: want switch, boot or test", pf.action)
	}
	if !plan.Reboot.Valid() {
		return toplevels{}, fmt.Errorf("--reboot %q: want always, never or if-needed", pf.reboot)
	}
	switch pf.strategy {
	case controller.StrategyAll, controller.StrategyRolling, controller.StrategyCanary:
	default:
		return toplevels{}, fmt.Errorf("--strategy %q: want all, rolling or canary", pf.strategy)
	}
	switch pf.onFailure {
	case "", controller.OnFailureHalt, controller.OnFailureRollback:
	default:
		return toplevels{}, fmt.Errorf("--on-failure %q: want halt or rollback", pf.onFailure)
	}
	tl, err := parseToplevels(pf.toplevels)
	if err != nil {
		return tl, err
	}
	trial := plan
	trial.Targets = map[string]string{}
	for n, p := range tl.named {
		trial.Targets[n] = p
	}
	switch {
	case pf.flake != "":
	case pf.rollback && pf.on == "":
		return tl, errors.New("--on is needed: which machines go back (@group or node names)")
	case pf.rollback:
	case pf.on == "" && tl.bare != "":
		return tl, errors.New("--toplevel PATH without NODE= needs --on to say which nodes")
	case pf.on == "" && len(tl.named) == 0:
		return tl, errors.New("nothing to publish: give --toplevel NODE=PATH (and/or --on), or --flake")
	}
	if len(trial.Targets) == 0 { // --on or --flake picks them once connected
		trial.Targets["stand-in"] = "/nix/store/00000000000000000000000000000000-stand-in"
	}
	if err := trial.Validate(); err != nil {
		return tl, withFlags(err)
	}
	return tl, nil
}

// parseAt reads --at: RFC 3339, or "YYYY-MM-DD HH:MM" in the local zone.
func parseAt(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation("2006-01-02 15:04", s, time.Local); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--at %q: want RFC 3339 (2026-12-03T02:00:00+01:00) or \"2026-12-03 02:00\" (this machine's time zone)", s)
}

// flakeTargets fills the plan from the flake: one evaluation, one build of
// the selected systems, an optional copy to a cache; planning metadata
// (reboot order, dependencies) comes from lab.machine.
func flakeTargets(ctx context.Context, g *globals, plan *controller.Plan, pf publishFlags) error {
	if len(pf.toplevels) > 0 {
		return usageError{errors.New("--flake and --toplevel exclude each other")}
	}
	attr, err := checkConfigurations(pf.configurations)
	if err != nil {
		return err
	}
	all, err := evaluate(ctx, g, pf.flake, attr)
	if err != nil {
		return err
	}
	ms, err := selectFlake(pf.on, all)
	if err != nil {
		return usageError{err}
	}
	if err := evalErrors(ms); err != nil {
		return err
	}
	nx := newNix(g, attr)
	fmt.Fprintf(g.errOut, "building %d systems in one nix build\n", len(ms))
	built, err := nx.Build(ctx, pf.flake, ms)
	if err != nil {
		return err
	}
	if pf.copyTo != "" {
		paths := make([]string, 0, len(built))
		for _, p := range built {
			paths = append(paths, p)
		}
		fmt.Fprintf(g.errOut, "copying %d closures to %s\n", len(paths), pf.copyTo)
		if err := nx.Copy(ctx, pf.copyTo, paths); err != nil {
			return err
		}
	}
	plan.Machines = map[string]controller.Machine{}
	for _, m := range ms {
		plan.Targets[m.Name] = built[m.Name]
		plan.Machines[m.Name] = controller.Machine{Name: m.Name, RebootOrder: m.RebootOrder, Dependencies: m.Dependencies}
	}
	return nil
}

// seconds rounds a timeout up to whole seconds (the wire unit).
func seconds(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32((d + time.Second - 1) / time.Second)
}

// toplevels is --toplevel parsed: systems by node name, and the one bare
// store path for every node --on selects.
type toplevels struct {
	named map[string]string
	bare  string
}

// parseToplevels reads every --toplevel before anything connects: the
// NODE=PATH syntax, the node name and the store path (a result link is
// resolved to the store path it points to).
func parseToplevels(list []string) (toplevels, error) {
	tl := toplevels{named: map[string]string{}}
	for _, t := range list {
		node, path, ok := strings.Cut(t, "=")
		if !ok {
			node, path = "", t
		}
		if ok {
			if err := proto.ValidID(node); err != nil {
				return tl, fmt.Errorf("--toplevel %s: node name %q: %w (want NODE=/nix/store/<hash>-<name>)", t, node, err)
			}
			if _, dup := tl.named[node]; dup {
				return tl, fmt.Errorf("--toplevel %s: %s is named twice", t, node)
			}
		}
		if path == "" {
			return tl, fmt.Errorf("--toplevel %q: no store path (want NODE=/nix/store/<hash>-<name>, or a nix-build result link)", t)
		}
		path, err := storePathOf(path)
		if err != nil && !ok && !strings.Contains(t, "/") && proto.ValidID(t) == nil {
			return tl, fmt.Errorf("--toplevel %s: no such file, and no system for it: to name node %s, write --toplevel %s=/nix/store/<hash>-<name>", t, t, t)
		}
		if err != nil {
			return tl, fmt.Errorf("--toplevel %s: %w", t, err)
		}
		if !ok {
			if tl.bare != "" {
				return tl, errors.New("--toplevel: only one bare store path is allowed (use NODE=PATH for more)")
			}
			tl.bare = path
			continue
		}
		tl.named[node] = path
	}
	return tl, nil
}

// resolveTargets fills plan.Targets from the parsed --toplevel and --on.
func resolveTargets(plan *controller.Plan, pf publishFlags, tl toplevels, fleet *controller.Fleet) error {
	bare := tl.bare
	for n, p := range tl.named {
		plan.Targets[n] = p
	}
	if pf.on == "" {
		if bare != "" {
			return errors.New("--toplevel PATH without NODE= needs --on to say which nodes")
		}
		if len(plan.Targets) == 0 {
			return errors.New("nothing to publish: give --toplevel NODE=PATH (and/or --on)")
		}
		return nil
	}
	terms, err := parseOn(pf.on)
	if err != nil {
		return err
	}
	for _, t := range terms {
		if t.group != "" && bare != "" {
			if plan.Groups == nil {
				plan.Groups = map[string]string{}
			}
			plan.Groups[t.group] = bare // members that join while it runs get it too
		}
	}
	selected, err := resolve(terms, fleet.Members, "no node has reported membership of this group")
	if err != nil {
		return err
	}
	picked := map[string]string{}
	for _, n := range selected {
		p, ok := plan.Targets[n]
		if !ok {
			p = bare
		}
		if p == "" {
			return fmt.Errorf("--on selects %s but no --toplevel names a system for it", n)
		}
		picked[n] = p
	}
	plan.Targets = picked
	return nil
}

// storePathOf resolves a system path given on the command line: a
// nix-build result link (./result) or any other link to a store path is
// replaced by the store path it points to. A /nix/store path is taken as
// it is (it may exist only on the machines and the cache, not here).
func storePathOf(p string) (string, error) {
	if strings.HasPrefix(p, proto.StoreDir) {
		if err := proto.ValidStorePath(p); err != nil {
			return "", fmt.Errorf("not a store path (want /nix/store/<32-char hash>-<name>, e.g. what nix-build printed): %w", err)
		}
		return p, nil
	}
	resolved, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("not a /nix/store path, and not a link to one: %w", err)
	}
	if abs, err := filepath.Abs(resolved); err == nil {
		resolved = abs
	}
	// A link into a store path's contents (result/bin/...) names no system.
	if err := proto.ValidStorePath(resolved); err != nil {
		return "", fmt.Errorf("resolves to %s, which is not a store path (want /nix/store/<hash>-<name>, e.g. a nix-build result link): %w", resolved, err)
	}
	return resolved, nil
}

// checkSeen refuses targets that never reported to this broker (no
// retained status or presence): a typo would otherwise leave a retained
// Desired for a machine that does not exist and a rollout waiting its
// whole wave deadline. --allow-unseen publishes anyway (a machine not yet
// installed converges when its labd first connects).
func checkSeen(g *globals, plan controller.Plan, fleet *controller.Fleet, allow bool) error {
	var unseen []string
	for _, n := range plan.Nodes() {
		if v, _ := fleet.Get(n); v.Status == nil && !v.Seen {
			unseen = append(unseen, n)
		}
	}
	if len(unseen) == 0 {
		return nil
	}
	list := strings.Join(unseen[:min(len(unseen), 10)], ", ")
	if len(unseen) > 10 {
		list += fmt.Sprintf(" and %d more", len(unseen)-10)
	}
	if !allow {
		hint := ""
		for _, n := range unseen {
			if len(fleet.Members(n)) > 0 {
				hint += fmt.Sprintf("; %s is a group: --on @%s selects its members", n, n)
			}
		}
		return usageError{fmt.Errorf("never seen on this broker: %s (no labd of that name has connected; `labctl status` lists the nodes it knows)%s: check the names, or add --allow-unseen to publish to machines that have not connected yet", list, hint)}
	}
	fmt.Fprintf(g.errOut, "warning: never seen on this broker: %s; they stay pending until a labd of that name connects\n", list)
	return nil
}
