package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
)

func newRollbackCmd(g *globals) *cobra.Command {
	pf := publishFlags{rollback: true}
	cmd := &cobra.Command{
		Use:   "rollback --on @group|node,... [--key FILE]",
		Short: "Send machines back to the system they ran before, as a signed rollout",
		Long: `rollback sends every machine --on selects back to its previous system: the
one it ran before its last switch (its retained status says which; labd
records it before the profile moves), else the generation of its system
profile before the current one. It is an ordinary rollout, signed with the
operator key and driven by the controller service, so the usual waves,
failure thresholds, health checks, summary and exit codes apply (see labctl
publish --help): a machine that fails its checks on the old system rolls
forward to where it was.

A machine whose previous system is unknown (it never switched under labd
and reports no generations) or that already runs it (it rolled itself back
in its last rollout) is named in an error before anything is published;
leave it out of --on. A machine that is offline gets its Desired retained
and goes back when it connects, as with publish.

The store paths must still be on the machines or in their binary cache: a
garbage-collected old system fails to fetch and the machine stays where it
is.`,
		Example: `  # the web servers go back, one at a time, stopping at the first failure
  labctl rollback --key operator.key --on @web --strategy rolling --batch 1
  # two machines, return once the controller accepted it
  labctl rollback --key operator.key --on nas,pi --detach`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runPublish(cmd, g, pf) },
	}
	cmd.Flags().StringVar(&pf.on, "on", "", "machines to send back: @group or node names, comma-separated (e.g. @web,db1)")
	pf.define(g, cmd)
	return cmd
}

// rollbackTargets fills plan.Targets with the previous system of every
// machine --on selects, or says which ones have none.
func rollbackTargets(g *globals, plan *controller.Plan, pf publishFlags, fleet *controller.Fleet) error {
	terms, err := parseOn(pf.on)
	if err != nil {
		return err
	}
	selected, err := resolve(terms, fleet.Members, "no node has reported membership of this group")
	if err != nil {
		return err
	}
	views := map[string]controller.NodeView{}
	for _, v := range fleet.Snapshot() {
		views[v.Name] = v
	}
	var problems []string
	for _, n := range selected {
		v, ok := views[n]
		if !ok || v.Status == nil {
			problems = append(problems, n+": no status seen, so its previous system is unknown")
			continue
		}
		p, err := previousSystem(v.Status)
		if err != nil {
			problems = append(problems, n+": "+err.Error())
			continue
		}
		plan.Targets[n] = p
		g.logger.Debug("rollback target", "node", n, "from", v.Status.Current, "to", p)
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("cannot send back:\n  %s\n(leave them out of --on)", strings.Join(problems, "\n  "))
	}
	if len(plan.Targets) == 0 {
		return errors.New("--on selects no machine")
	}
	return nil
}

// previousSystem is the system a node ran before its current one: the
// previous toplevel it recorded before its last switch, else the newest
// generation of its profile before the current one with another system.
func previousSystem(st *proto.NodeStatus) (string, error) {
	cur := st.Current
	if cur == "" {
		return "", errors.New("it reports no current system")
	}
	if st.Previous != "" {
		if st.Previous == cur {
			return "", fmt.Errorf("it already runs its previous system %s (its last rollout %s ended %s)", render.ShortPath(cur), orNone(st.Execution.Rollout), st.Execution.State)
		}
		return st.Previous, nil
	}
	gens := slices.Clone(st.Generations)
	slices.SortFunc(gens, func(a, b proto.Generation) int { return b.Number - a.Number }) // newest first
	at := -1
	for i, gen := range gens {
		if gen.Current || (at < 0 && gen.Toplevel == cur) {
			at = i
			if gen.Current {
				break
			}
		}
	}
	if at >= 0 {
		for _, gen := range gens[at+1:] {
			if gen.Toplevel != cur && gen.Toplevel != "" {
				return gen.Toplevel, nil
			}
		}
	}
	return "", errors.New("no previous system known (it never switched under labd, and reports no older generation)")
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
