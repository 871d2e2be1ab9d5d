package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lab-fleet/lab/broker/access"
	"github.com/lab-fleet/lab/internal/pki"
	"github.com/lab-fleet/lab/proto"
	"github.com/spf13/cobra"
)

func newNodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Manage who may connect to the broker",
	}
	cmd.AddCommand(newNodeAddCmd(g), newNodeRemoveCmd(g))
	return cmd
}

func newNodeAddCmd(g *globals) *cobra.Command {
	var identities, groups, role, outDir, brokerURL, pkiDir string
	cmd := &cobra.Command{
		Use:   "add NAME [--groups a,b] [--role node|controller|viewer] --identities FILE",
		Short: "Create a broker identity with a new password, and print how to use it",
		Long: `add creates (or replaces) an identity in the broker's identities file: a
random token (a password of 192 random bits), stored there only as its
SHA-256 hash ($sha256$…: checked in microseconds, and safe because a random
token cannot be guessed; passwords people chose are bcrypt, see
docs/security.md). The token itself is written to NAME.password in --out
(created if missing; mode 0600) and never printed. A running
broker picks the change up by itself within seconds (or at once on SIGHUP).

For a node, it prints the NixOS snippet that makes labd use it: copy the
password file to the machine (e.g. with your secrets tool) and point
services.labd.passwordFile at it. A node may read only its own desired
state and commands and its groups' gates; give it the same groups here as
in its lab.machine options.`,
		Example: `  labctl node add kitchen-pi --groups family,arm --identities /var/lib/lab-broker/identities.yaml
  labctl node add ops --role controller --identities /var/lib/lab-broker/identities.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := proto.ValidID(name); err != nil {
				return usageError{fmt.Errorf("name %q: %w", name, err)}
			}
			if identities == "" {
				return usageError{errors.New("--identities FILE is required (the file labctl broker --identities reads)")}
			}
			if pkiDir != "" { // before anything is written: a half-made identity helps nobody
				for _, f := range []string{"ca.crt", "ca.key"} {
					if _, err := os.Stat(filepath.Join(pkiDir, f)); err != nil {
						return usageError{fmt.Errorf("--pki %s: no CA there (%w): make one with labctl pki init --dir %s", pkiDir, err, pkiDir)}
					}
				}
			}
			id := access.Identity{Name: name, Role: access.Role(role)}
			if groups != "" {
				id.Groups = strings.Split(groups, ",")
			}
			var raw [24]byte
			if _, err := rand.Read(raw[:]); err != nil {
				return err
			}
			password := base64.RawURLEncoding.EncodeToString(raw[:])
			hash, err := access.HashToken([]byte(password))
			if err != nil {
				return err
			}
			id.PasswordHash = hash
			f, err := access.ReadFile(identities)
			if err != nil {
				return err
			}
			f.Put(id)
			if _, err := access.New(f, proto.DefaultTopics); err != nil {
				return usageError{err}
			}
			secret := filepath.Join(outDir, name+".password")
			if err := os.MkdirAll(outDir, 0o700); err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			if err := os.WriteFile(secret, []byte(password+"\n"), 0o600); err != nil {
				return err
			}
			if err := access.Save(identities, f); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "identity %s (%s) written to %s; its password is in %s\n", name, role, identities, secret)
			if pkiDir != "" {
				if err := pki.Issue(pkiDir, name, nil, 825); err != nil {
					return err
				}
				fmt.Fprintf(g.out, "client certificate (CN=%s): %s and %s; with it no password is needed on the TLS listener\n",
					name, filepath.Join(pkiDir, name+".crt"), filepath.Join(pkiDir, name+".key"))
			}
			if id.Role == access.RoleNode && pkiDir != "" {
				url := brokerURL
				if !cmd.Flags().Changed("broker-url") {
					url = defaultTLSSnippetURL
				}
				fmt.Fprintf(g.out, `
NixOS configuration of %[1]s. Put the files it names in place first:
  %[2]s  next to this configuration, as ./lab-ca.crt (public)
  %[3]s  on %[1]s as /run/secrets/labd.crt
  %[4]s  on %[1]s as /run/secrets/labd.key (secret: use your secrets tool, never the Nix store)

  services.labd = {
    enable = true;
    name = %[1]q;
    broker = [ %[5]q ];
    tls = { caFile = ./lab-ca.crt; certFile = "/run/secrets/labd.crt"; keyFile = "/run/secrets/labd.key"; };
  };
  lab.machine.groups = [ %[6]s ];
`, name, filepath.Join(pkiDir, pki.CACert), filepath.Join(pkiDir, name+".crt"), filepath.Join(pkiDir, name+".key"), url, quoted(id.Groups))
				if !strings.HasPrefix(url, "tls://") && !strings.HasPrefix(url, "wss://") {
					fmt.Fprintf(g.out, "\nnote: %s is not a TLS URL: the certificate is only sent to the broker's TLS listener (tls:// or wss://)\n", url)
				}
			} else if id.Role == access.RoleNode {
				fmt.Fprintf(g.out, `
NixOS configuration of %[1]s (copy %[2]s to the machine, e.g. as /run/secrets/labd-mqtt-password):

  services.labd = {
    enable = true;
    name = %[3]q;
    broker = [ %[4]q ];
    passwordFile = "/run/secrets/labd-mqtt-password";
  };
  lab.machine.groups = [ %[5]s ];
`, name, secret, name, brokerURL, quoted(id.Groups))
			} else {
				fmt.Fprintf(g.out, "\nUse it with: labctl --username %s --password-file %s ...\n", name, secret)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&identities, "identities", "", "the broker's identities `FILE` (created if missing)")
	f.StringVar(&groups, "groups", "", "groups of a node, comma-separated")
	f.StringVar(&role, "role", "node", "node, controller or viewer")
	f.StringVar(&outDir, "out", ".", "`DIR` for the NAME.password file")
	f.StringVar(&brokerURL, "broker-url", "mqtt://broker.lan:1883", "broker URL to put in the NixOS snippet (with --pki the default is "+defaultTLSSnippetURL+")")
	f.StringVar(&pkiDir, "pki", "", "also issue a client certificate (CN=NAME) from the CA in `DIR` (labctl pki init)")
	return cmd
}

// defaultTLSSnippetURL is the broker URL of node add's snippet for a node
// with a client certificate: the TLS listener (labctl broker --tls-listen :8883).
const defaultTLSSnippetURL = "tls://broker.lan:8883"

func quoted(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, " ")
}
