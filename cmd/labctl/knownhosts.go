package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/lab-fleet/lab/controller/flake"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
)

// hostKeysRow is one machine's SSH host keys as its retained status
// reports them (ed25519 first).
type hostKeysRow struct {
	Name     string   `json:"name"`
	HostKeys []string `json:"host_keys"`
}

// knownHosts prints the fleet's SSH host keys from retained status, as
// a NixOS module setting programs.ssh.knownHosts ("nix"), as a
// known_hosts file, or as JSON. With a flake (ms not nil) the machines
// are the flake's, else every machine that has a retained status.
// Machines without keys are named on errOut.
func knownHosts(ctx context.Context, g *globals, ms []flake.Machine, format string, asJSON bool) error {
	conn, err := connectTo(ctx, g, func(t proto.Topics) []string { return []string{t.AllStatus()} })
	if err != nil {
		return err
	}
	defer conn.close()
	var names []string
	if ms != nil {
		for _, m := range ms {
			names = append(names, m.Name)
		}
	} else {
		for _, v := range conn.fleet.Snapshot() {
			names = append(names, v.Name)
		}
	}
	rows := []hostKeysRow{}
	var without []string
	for _, n := range names {
		v, ok := conn.fleet.Get(n)
		if !ok || v.Status == nil || len(v.Status.HostKeys) == 0 {
			without = append(without, n)
			continue
		}
		rows = append(rows, hostKeysRow{Name: n, HostKeys: v.Status.HostKeys})
	}
	if len(without) > 0 {
		fmt.Fprintf(g.errOut, "no SSH host keys reported by %d machines (never seen, a labd older than host_keys, or no ssh_host_keys files): %s\n",
			len(without), strings.Join(without, ", "))
	}
	switch {
	case asJSON:
		return render.WriteJSON(g.out, rows)
	case format == "known_hosts":
		return writeKnownHostsFile(g.out, rows)
	}
	return writeKnownHostsNix(g.out, rows)
}

// writeKnownHostsFile writes one "<machine> <type> <base64>" line per key.
func writeKnownHostsFile(w io.Writer, rows []hostKeysRow) error {
	for _, r := range rows {
		for _, k := range r.HostKeys {
			if _, err := fmt.Fprintf(w, "%s %s\n", r.Name, k); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeKnownHostsNix writes a NixOS module: programs.ssh.knownHosts
// takes ONE publicKey per entry, so a machine's first key (ed25519 when
// it has one) is the entry named after it and each further key gets
// "<machine>-<type>"; every entry's hostNames is the machine's name.
func writeKnownHostsNix(w io.Writer, rows []hostKeysRow) error {
	var b strings.Builder
	b.WriteString("# SSH host keys of the fleet, from each machine's retained status (labctl inventory --known-hosts).\n")
	b.WriteString("{\n  programs.ssh.knownHosts = {\n")
	for _, r := range rows {
		for i, k := range r.HostKeys {
			name := r.Name
			if i > 0 {
				name += "-" + proto.HostKeyType(k)
			}
			fmt.Fprintf(&b, "    %s = { hostNames = [ %s ]; publicKey = %s; };\n", nixString(name), nixString(r.Name), nixString(k))
		}
	}
	b.WriteString("  };\n}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// nixString quotes s as a Nix string literal: \, " and ${ escaped.
func nixString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "${", `\${`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

// inventoryKnownHosts is `labctl inventory --known-hosts`: the flake,
// when given, names the machines.
func inventoryKnownHosts(ctx context.Context, g *globals, ref, attr, format string, asJSON, noLive bool) error {
	if format != "nix" && format != "known_hosts" {
		return usageError{fmt.Errorf("--format %q: want nix or known_hosts", format)}
	}
	if noLive {
		return usageError{errors.New("--known-hosts reads retained status: it cannot go with --no-live")}
	}
	var ms []flake.Machine
	if ref != "" {
		var err error
		if ms, err = evaluate(ctx, g, ref, attr); err != nil {
			return err
		}
		if ms == nil {
			ms = []flake.Machine{}
		}
	}
	return knownHosts(ctx, g, ms, format, asJSON)
}
