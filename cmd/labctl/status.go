package main

import (
	"time"

	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
	"github.com/spf13/cobra"
)

func newStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show fleet state from the nodes' retained status and presence",
		Long: `status connects to the broker, reads every node's retained status and
presence (what any MQTT client can read), and prints one line per node:
whether it is online, its last execution state, the rollout it belongs to,
the system it runs and its health checks.`,
		Example: `  labctl status
  labctl status --json | jq '.[] | select(.online == false) | .node'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := connectTo(cmd.Context(), g, func(t proto.Topics) []string { return []string{t.AllStatus(), t.AllPresence()} })
			if err != nil {
				return err
			}
			defer conn.close()
			rows := render.StatusRows(conn.fleet.Snapshot())
			if asJSON {
				return render.WriteJSON(g.out, rows)
			}
			return render.WriteStatus(g.out, rows, time.Now())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (an array of nodes) instead of a table")
	addClientFlags(g, cmd)
	return cmd
}
