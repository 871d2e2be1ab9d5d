package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/lab-fleet/lab/internal/pki"
	"github.com/lab-fleet/lab/proto"
	"github.com/spf13/cobra"
)

func newPKICmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "A certificate authority for TLS between the broker and the machines",
		Long: `pki keeps a small CA in a directory: init creates it, issue signs a
certificate. A broker certificate names its hosts (--host); a client
certificate's common name is the identity (a node's name, or a controller's),
so with labctl broker --tls-client-ca ca.crt that machine needs no password.
Bring your own CA instead by pointing the same flags at its files.`,
	}
	var dir, name string
	var years int
	initCmd := &cobra.Command{
		Use:   "init --dir DIR",
		Short: "Create a CA (ca.crt, ca.key) in DIR",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := pki.Init(dir, name, years); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "CA created: %s (give it to every machine) and %s (keep it secret)\n",
				filepath.Join(dir, pki.CACert), filepath.Join(dir, pki.CAKey))
			return nil
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", "pki", "CA `DIR`")
	initCmd.Flags().StringVar(&name, "name", "lab CA", "the CA's common name")
	initCmd.Flags().IntVar(&years, "years", 10, "validity in years")
	var hosts string
	var days int
	issue := &cobra.Command{
		Use:   "issue NAME --dir DIR [--host broker.example.net,10.0.0.2]",
		Short: "Sign a certificate: for the broker (--host) or for an identity (its common name is NAME)",
		Example: `  labctl pki issue broker --dir pki --host lab.example.net,10.0.0.2
  labctl pki issue kitchen-pi --dir pki     # a node: CN=kitchen-pi`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var hs []string
			if hosts != "" {
				hs = strings.Split(hosts, ",")
			} else if err := proto.ValidID(args[0]); err != nil {
				return usageError{fmt.Errorf("a client certificate's name is an identity: %w", err)}
			}
			if err := pki.Issue(dir, args[0], hs, days); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "issued %s and %s\n", filepath.Join(dir, args[0]+".crt"), filepath.Join(dir, args[0]+".key"))
			return nil
		},
	}
	issue.Flags().StringVar(&dir, "dir", "pki", "CA `DIR`")
	issue.Flags().StringVar(&hosts, "host", "", "server certificate for these DNS names and IPs, comma-separated")
	issue.Flags().IntVar(&days, "days", 825, "validity in days")
	cmd.AddCommand(initCmd, issue)
	return cmd
}
