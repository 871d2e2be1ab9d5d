package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lab-fleet/lab/broker/access"
	"github.com/lab-fleet/lab/proto"
	"github.com/spf13/cobra"
)

func newACLCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "acl", Short: "Export the broker's access rules for another broker"}
	var format, identities, out, passwords string
	export := &cobra.Command{
		Use:   "export --format mosquitto --identities FILE --out DIR [--passwords DIR]",
		Short: "Write the identities and rules as a mosquitto password file and ACL file",
		Long: `export writes the rules the embedded broker enforces (docs/security.md) for
mosquitto: DIR/acl (per-user topic lines and %u patterns; anything else is
denied) and, with --passwords (the directory labctl node add wrote the
NAME.password files to), DIR/passwd in mosquitto's own hash format. Point
mosquitto's acl_file and password_file at them, with allow_anonymous false.`,
		Example: `  labctl acl export --format mosquitto --identities identities.yaml --passwords secrets/ --out /etc/mosquitto/lab`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "mosquitto" {
				return usageError{fmt.Errorf("--format %q: only mosquitto is supported (docs/security.md shows EMQX)", format)}
			}
			if identities == "" || out == "" {
				return usageError{errors.New("--identities and --out are required")}
			}
			topics, err := proto.NewTopics(g.v.GetString(keyPrefix))
			if err != nil {
				return usageError{err}
			}
			t, err := access.Load(identities, topics)
			if err != nil {
				return err
			}
			f, err := access.ReadFile(identities)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(out, "acl"), []byte(t.MosquittoACL()), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "wrote %s\n", filepath.Join(out, "acl"))
			if passwords == "" {
				return nil
			}
			var lines []string
			for _, id := range f.Identities {
				b, err := os.ReadFile(filepath.Join(passwords, id.Name+".password"))
				if err != nil {
					fmt.Fprintf(g.errOut, "warning: %s: no password file, left out of passwd: %v\n", id.Name, err)
					continue
				}
				line, err := access.MosquittoPassword(id.Name, []byte(strings.TrimSpace(string(b))))
				if err != nil {
					return err
				}
				lines = append(lines, line)
			}
			if err := os.WriteFile(filepath.Join(out, "passwd"), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "wrote %s (%d users)\n", filepath.Join(out, "passwd"), len(lines))
			return nil
		},
	}
	fl := export.Flags()
	fl.StringVar(&format, "format", "mosquitto", "target broker: mosquitto")
	fl.StringVar(&identities, "identities", "", "the identities `FILE`")
	fl.StringVar(&out, "out", "", "output `DIR`")
	fl.StringVar(&passwords, "passwords", "", "`DIR` with the NAME.password files of labctl node add (for the passwd file)")
	cmd.AddCommand(export)
	return cmd
}
