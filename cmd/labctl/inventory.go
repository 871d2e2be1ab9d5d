package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/controller/flake"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/spf13/cobra"
)

// newNix runs Nix on the machines under the attribute path
// configurations, as checkConfigurations returned it.
func newNix(g *globals, configurations string) flake.Nix {
	return flake.Nix{Logger: g.logger, Configurations: configurations}
}

// configurationsUsage is the --configurations flag's help.
const configurationsUsage = "flake attribute `ATTRPATH` whose entries are the machines (e.g. clan.nixosConfigurations, legacyPackages.x86_64-linux.fleet; quote other names: 'fleets.\"lab one\"')"

// checkConfigurations checks --configurations and returns it as Nix
// gets it.
func checkConfigurations(s string) (string, error) {
	attr, err := flake.ParseAttrPath(s)
	if err != nil {
		return "", usageError{fmt.Errorf("--configurations: %w", err)}
	}
	return attr, nil
}

// evaluate runs the one inventory evaluation and says how long it took.
func evaluate(ctx context.Context, g *globals, ref, configurations string) ([]flake.Machine, error) {
	ms, took, err := newNix(g, configurations).Inventory(ctx, ref)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(g.errOut, "evaluated %d machines of %s#%s in one nix eval (%s)\n", len(ms), ref, configurations, took.Round(time.Millisecond))
	return ms, nil
}

// selectFlake picks machines by "@group,name,..." (empty: all).
func selectFlake(on string, ms []flake.Machine) ([]flake.Machine, error) {
	if strings.TrimSpace(on) == "" {
		return ms, nil
	}
	terms, err := parseOn(on)
	if err != nil {
		return nil, err
	}
	byName := map[string]flake.Machine{}
	for _, m := range ms {
		byName[m.Name] = m
	}
	names, err := resolve(terms, func(group string) []string {
		var in []string
		for _, m := range ms {
			if slices.Contains(m.Groups, group) {
				in = append(in, m.Name)
			}
		}
		return in
	}, "no machine of the flake is in this group")
	if err != nil {
		return nil, err
	}
	out := make([]flake.Machine, 0, len(names))
	for _, n := range names {
		m, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("--on %s: no machine of the flake has this name", n)
		}
		out = append(out, m)
	}
	return out, nil
}

// evalErrors reports the machines whose evaluation failed, with Nix's words.
func evalErrors(ms []flake.Machine) error {
	var msgs []string
	for _, m := range ms {
		if m.Error != "" {
			msgs = append(msgs, fmt.Sprintf("%s:\n%s", m.Name, indent(m.Error)))
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("machines that do not evaluate (%d), as Nix says:\n%s", len(msgs), strings.Join(msgs, "\n"))
}

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }

func newInventoryCmd(g *globals) *cobra.Command {
	var ref, configurations, format string
	var asJSON, noLive, known bool
	cmd := &cobra.Command{
		Use:   "inventory --flake REF [--configurations ATTRPATH] [--json] | --known-hosts [--format nix|known_hosts]",
		Short: "Show the fleet as the flake declares it, and which machines are behind",
		Long: `inventory evaluates every nixosConfigurations entry of the flake in ONE
nix eval — each machine's lab.machine options (role, groups, reboot order,
dependencies) and the store path of its system — and compares it with the
machines' live retained status: up to date, behind (runs another system),
offline, or never seen. Evaluation errors are shown as Nix printed them,
with the machine's name. --configurations reads the machines from another
attribute path than nixosConfigurations (fleets that flake-parts, clan or a
cluster layer assemble).

--known-hosts prints the SSH host public keys the machines report in their
retained status (labd's ssh_host_keys) instead: a NixOS module setting
programs.ssh.knownHosts (--format nix, the default: one entry per key, the
machine's first key — ed25519 when it has one — named after it, further
keys "<machine>-<type>"), or a known_hosts file (--format known_hosts), or
--json. With --flake, the flake's machines; without, every machine with a
retained status. Machines that report no key are named on stderr.`,
		Example: `  labctl inventory --flake .
  labctl inventory --flake github:me/fleet --json | jq '.[] | select(.live == "behind") | .name'
  labctl inventory --flake . --configurations clan.nixosConfigurations
  labctl inventory --known-hosts > known-hosts.nix
  labctl inventory --known-hosts --format known_hosts --flake . > ssh_known_hosts`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			attr, err := checkConfigurations(configurations)
			if err != nil {
				return err
			}
			if known {
				return inventoryKnownHosts(cmd.Context(), g, ref, attr, format, asJSON, noLive)
			}
			if cmd.Flags().Changed("format") {
				return usageError{errors.New("--format goes with --known-hosts")}
			}
			if ref == "" {
				return usageError{errors.New("--flake is required (e.g. --flake .)")}
			}
			ms, err := evaluate(cmd.Context(), g, ref, attr)
			if err != nil {
				return err
			}
			live := map[string]string{}
			if !noLive {
				conn, err := connect(cmd.Context(), g)
				if err != nil {
					return err
				}
				defer conn.close()
				for _, m := range ms {
					live[m.Name] = liveState(m, conn.fleet)
				}
			}
			rows := make([]inventoryRow, len(ms))
			for i, m := range ms {
				rows[i] = inventoryRow{Machine: m, Live: live[m.Name]}
			}
			if asJSON {
				return render.WriteJSON(g.out, rows)
			}
			tw := tabwriter.NewWriter(g.out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tGROUPS\tORDER\tDEPENDS ON\tSYSTEM\tLIVE")
			for _, r := range rows {
				sys := render.ShortPath(r.Toplevel)
				if r.Error != "" {
					sys = "EVAL ERROR"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Name, dashed(r.Role), dashed(strings.Join(r.Groups, ",")), r.RebootOrder,
					dashed(strings.Join(r.Dependencies, ",")), sys, dashed(r.Live))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if err := evalErrors(ms); err != nil {
				fmt.Fprintln(g.errOut, err)
				return exitErr{code: exitError, err: errors.New("some machines do not evaluate")}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ref, "flake", "", "flake `REF` whose nixosConfigurations are the fleet (., path:/dir, github:owner/repo)")
	f.StringVar(&configurations, "configurations", flake.DefaultConfigurations, configurationsUsage)
	f.BoolVar(&known, "known-hosts", false, "print the machines' SSH host public keys from their retained status (see --format)")
	f.StringVar(&format, "format", "nix", "with --known-hosts: nix (a module setting programs.ssh.knownHosts) or known_hosts")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.BoolVar(&noLive, "no-live", false, "do not connect to the broker (no live comparison)")
	addClientFlags(g, cmd)
	return cmd
}

type inventoryRow struct {
	flake.Machine
	// Live compares with the machine's retained status: up-to-date,
	// behind, offline (and behind or not), never-seen.
	Live string `json:"live,omitempty"`
}

func liveState(m flake.Machine, fleet *controller.Fleet) string {
	v, ok := fleet.Get(m.Name)
	switch {
	case !ok || v.Status == nil:
		return "never-seen"
	case m.Toplevel == "":
		return "unknown"
	case v.Status.Current == m.Toplevel && v.Online:
		return "up-to-date"
	case v.Status.Current == m.Toplevel:
		return "up-to-date (offline)"
	case v.Online:
		return "behind"
	}
	return "behind (offline)"
}

func dashed(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
