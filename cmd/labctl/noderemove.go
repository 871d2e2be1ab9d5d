package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lab-fleet/lab/broker/access"
	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/proto"
)

func newNodeRemoveCmd(g *globals) *cobra.Command {
	var identities string
	var identityOnly bool
	cmd := &cobra.Command{
		Use:   "remove NAME [--identities FILE]",
		Short: "Forget a machine that is gone: its retained state, and its identity",
		Long: `remove forgets a machine that is gone for good. The controller service clears
what the broker retains of it — its status, presence, desired state and the
secrets it reported (and their JSON copies) — so that labctl status, labctl watch, the dashboard,
/metrics and Home Assistant drop it at once. With --identities, its identity
is also removed from the broker's identities file (the broker reloads it
within 2 s): it can no longer log in. Its password file is left alone.

Stop labd on the machine first: the controller refuses to forget a machine
that is online (its next status would bring it back), or one that a running
rollout has as a target (cancel that first).

On an external broker the controller identity may not write a node's
status: the refusal says which topics to clear as the broker's
administrator.`,
		Example: `  labctl node remove old-laptop --identities /var/lib/lab-broker/identities.yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := proto.ValidID(name); err != nil {
				return usageError{fmt.Errorf("name %q: %w", name, err)}
			}
			if identityOnly && identities == "" {
				return usageError{errors.New("--identity-only needs --identities FILE")}
			}
			var f access.File
			if identities != "" { // read before anything changes: a broken file stops it here
				var err error
				if f, err = access.ReadFile(identities); err != nil {
					return usageError{fmt.Errorf("--identities: %w", err)}
				}
			}
			if !identityOnly {
				conn, err := connectTo(cmd.Context(), g, func(proto.Topics) []string { return nil })
				if err != nil {
					return err
				}
				defer conn.close()
				_, err = conn.request(cmd.Context(), controller.VerbForget, &controller.Request{Node: name}, requestWait)
				var ce ctlError
				switch {
				case errors.As(err, &ce) && ce.resp.Code == controller.CodeNotFound:
					fmt.Fprintf(g.out, "%s: the broker retains nothing of it (it never reported, or was forgotten already)\n", name)
				case err != nil:
					return err
				default:
					fmt.Fprintf(g.out, "%s: its retained status, presence and desired state are cleared: every view of the fleet drops it\n", name)
				}
			}
			if identities == "" {
				return nil
			}
			if !f.Remove(name) {
				fmt.Fprintf(g.out, "%s: no identity of that name in %s\n", name, identities)
				return nil
			}
			if err := access.Save(identities, f); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "%s: identity removed from %s (the broker reloads it within 2 s; it can no longer log in)\n", name, identities)
			return nil
		},
	}
	cmd.Flags().StringVar(&identities, "identities", "", "also remove its identity from the broker's identities `FILE`")
	cmd.Flags().BoolVar(&identityOnly, "identity-only", false, "only remove the identity; leave what the broker retains (no broker needed)")
	addClientFlags(g, cmd)
	return cmd
}
