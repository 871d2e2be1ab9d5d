package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/lab-fleet/lab/proto"
	"github.com/spf13/cobra"
)

func newKeyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Create and inspect signing keys",
		Long: `Signing keys are ed25519 keys written like Nix's: "<id>:<base64>".
The operator's key signs Desired states (what a machine runs); nodes pin its
public key in labd's trusted_keys.`,
	}
	cmd.AddCommand(newKeyGenerateCmd(g), newKeyPublicCmd(g))
	return cmd
}

func newKeyGenerateCmd(g *globals) *cobra.Command {
	var id, out string
	var force bool
	cmd := &cobra.Command{
		Use:   "generate --id ID --out FILE",
		Short: "Generate a signing key; print its public key",
		Example: `  labctl key generate --id operator-2026 --out ~/.config/lab/operator.key
  # then put the printed public key into every labd's trusted_keys`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageError{errors.New("--out FILE is required (the secret key is never printed)")}
			}
			k, err := proto.GenerateKey(id)
			if err != nil {
				return usageError{fmt.Errorf("--id: %w", err)}
			}
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			f, err := os.OpenFile(out, flags, 0o600)
			if errors.Is(err, fs.ErrExist) {
				return usageError{fmt.Errorf("%s exists: not overwriting a key (nodes may trust it); --force overwrites it: %w", out, err)}
			}
			if err != nil {
				return fmt.Errorf("write key: %w", err)
			}
			if _, err := fmt.Fprintln(f, k.String()); err != nil {
				f.Close()
				return fmt.Errorf("write key %s: %w", out, err)
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("write key %s: %w", out, err)
			}
			fmt.Fprintln(g.out, k.Public().String())
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "id", "operator", "key `ID` ([A-Za-z0-9._-], e.g. operator-2026); nodes select keys by it")
	cmd.Flags().StringVar(&out, "out", "", "write the secret key to `FILE` (mode 0600; refuses to overwrite)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing key file")
	return cmd
}

func newKeyPublicCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "public FILE",
		Short: "Print the public key of a secret key file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := readPrivateKey(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(g.out, k.Public().String())
			return nil
		},
	}
}

// readPrivateKey reads a secret key file written by `labctl key generate`.
func readPrivateKey(path string) (proto.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return proto.PrivateKey{}, fmt.Errorf("read key: %w", err)
	}
	text := strings.TrimSpace(string(b))
	k, err := proto.ParsePrivateKey(text)
	if err != nil {
		if pub, perr := proto.ParsePublicKey(text); perr == nil {
			return proto.PrivateKey{}, fmt.Errorf("key %s holds the public key %q (what nodes trust), not a secret key: "+
				"give the file labctl key generate --out wrote: %w", path, pub.ID, err)
		}
		return proto.PrivateKey{}, fmt.Errorf("key %s is not an operator signing key (labctl key generate --out writes one): %w", path, err)
	}
	return k, nil
}
