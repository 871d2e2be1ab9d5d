package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/internal/secretbox"
	"github.com/lab-fleet/lab/proto"
)

func newSecretCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Give machines secrets that only they can read",
		Long: `A secret is a file for one machine, encrypted with age to that machine's own
key (its SSH host ed25519 key, or an age identity labd made) and signed with
the operator's key. The broker, its disk and every other client see only
ciphertext; labd verifies, decrypts and writes the file under
/run/lab-secrets (docs/secrets.md).`,
	}
	cmd.AddCommand(newSecretSetCmd(g), newSecretRmCmd(g), newSecretListCmd(g), newSecretRecipientsCmd(g))
	return cmd
}

// secretTargets resolves NODE|@group (comma-separated) against the
// retained statuses.
func secretTargets(sel string, fleet *controller.Fleet) ([]string, error) {
	terms, err := parseOn(sel)
	if err != nil {
		return nil, usageError{errors.New(strings.TrimPrefix(err.Error(), "--on "))}
	}
	names, err := resolve(terms, fleet.Members, "no node has reported membership of this group")
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "--on "))
	}
	return names, nil
}

func statusFilters(t proto.Topics) []string { return []string{t.AllStatus()} }

func newSecretSetCmd(g *globals) *cobra.Command {
	var file, path, owner, group, mode, keyFile string
	var restart []string
	var expires time.Duration
	cmd := &cobra.Command{
		Use:   "set NODE|@group NAME --file F --key FILE [--path P] [--owner U] [--group G] [--mode M] [--restart UNIT]...",
		Short: "Encrypt a file to each target machine and publish it as a secret",
		Long: `set reads each target's recipient from its retained status, encrypts the
file to it, signs the secret with --key (an operator key the machines pin in
trusted_keys) and publishes it retained on lab/v1/node/<node>/secret/<name>,
which only that machine may read. A target that reports no recipient (it never
reported, or runs a labd without secrets) is refused by name, and nothing is
published then.

Setting a secret again is its rotation: a new version (the time in ms), which
replaces the file; a machine never takes an older version than it has.
labd writes /run/lab-secrets/NAME unless --path names another file under it,
with --owner, --group and --mode (default 0400), atomically, then restarts
each --restart unit (systemctl try-restart). labctl secret list shows what
each machine did with it.`,
		Example: `  labctl secret set db1 postgres-password --file ./pw --key operator.key --owner postgres --restart postgresql.service
  labctl secret set @web tls-key --file key.pem --key operator.key --path /run/lab-secrets/nginx/key.pem --owner nginx --mode 0440`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[1]
			if err := proto.ValidID(name); err != nil {
				return usageError{fmt.Errorf("NAME %q: %w", name, err)}
			}
			if file == "" {
				return usageError{errors.New("--file F is required: the secret's content (never on the command line)")}
			}
			if keyFile == "" {
				return usageError{errors.New("--key FILE is required: machines take only secrets signed by an operator key they pin")}
			}
			key, err := readPrivateKey(keyFile)
			if err != nil {
				return usageError{fmt.Errorf("--key: %w", err)}
			}
			m, err := strconv.ParseUint(mode, 8, 32)
			if err != nil || m > 0o777 {
				return usageError{fmt.Errorf("--mode %q: want octal permission bits such as 0400 or 0440", mode)}
			}
			content, err := os.ReadFile(file)
			if err != nil {
				return usageError{fmt.Errorf("--file: %w", err)}
			}
			if len(content) > proto.MaxSecretContent-1024 {
				return usageError{fmt.Errorf("--file: %d bytes; a secret holds at most %d", len(content), proto.MaxSecretContent-1024)}
			}
			tmpl := proto.Secret{Name: name, Path: path, Owner: owner, Group: group, Mode: uint32(m), Restart: restart}
			if expires > 0 {
				tmpl.Expires = time.Now().Add(expires).UnixMilli()
			}
			tmpl.V, tmpl.Kind, tmpl.ID, tmpl.Node, tmpl.Version, tmpl.Ciphertext = proto.Version, proto.KindSecret, "x", "x", 1, []byte{1}
			if err := tmpl.Validate(); err != nil {
				return usageError{err}
			}
			conn, err := connectTo(cmd.Context(), g, statusFilters)
			if err != nil {
				return err
			}
			defer conn.close()
			targets, err := secretTargets(args[0], conn.fleet)
			if err != nil {
				return err
			}
			var none []string
			recipients := map[string]string{}
			for _, n := range targets {
				v, ok := conn.fleet.Get(n)
				if !ok || v.Status == nil || v.Status.Recipient == "" {
					none = append(none, n)
					continue
				}
				recipients[n] = v.Status.Recipient
			}
			if len(none) > 0 {
				return exitErr{code: exitError, err: fmt.Errorf("no recipient reported by %s (never reported, or a labd without secrets): nothing published", strings.Join(none, ", "))}
			}
			version := uint64(time.Now().UnixMilli())
			for _, n := range targets {
				ct, err := secretbox.Encrypt(content, recipients[n])
				if err != nil {
					return fmt.Errorf("%s: recipient %q: %w", n, recipients[n], err)
				}
				s := tmpl
				s.Node, s.Version, s.Ciphertext, s.Restart = n, version, ct, slices.Clone(restart)
				s.Stamp(conn.self, time.Now())
				if err := proto.Sign(&s, key); err != nil {
					return err
				}
				b, err := proto.Seal(&s)
				if err != nil {
					return err
				}
				if err := conn.bus.Publish(cmd.Context(), conn.topics.NodeSecret(n, name), b, true); err != nil {
					return fmt.Errorf("publish secret %s for %s: %w", name, n, err)
				}
				fmt.Fprintf(g.out, "%s: secret %s version %d published, encrypted to %s\n", n, name, version, shortRecipient(recipients[n]))
			}
			clear(content)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "file", "", "the secret's content: `FILE` (- is not accepted: a file, never argv)")
	f.StringVar(&keyFile, "key", "", "operator signing key `FILE` (labctl key generate)")
	f.StringVar(&path, "path", "", "absolute `PATH` of the file on the machine, under its secrets.dir (default /run/lab-secrets/NAME)")
	f.StringVar(&owner, "owner", "", "owner of the file, a `USER` name or uid (default labd's user, root)")
	f.StringVar(&group, "group", "", "group of the file, a `GROUP` name or gid (default labd's group)")
	f.StringVar(&mode, "mode", "0400", "permission bits of the file, octal `MODE`")
	f.StringArrayVar(&restart, "restart", nil, "systemd `UNIT` to restart once the file changed (repeatable)")
	f.DurationVar(&expires, "expires", 0, "machines refuse the secret after this `DURATION` (a machine asleep longer does not take it; 0: never)")
	addClientFlags(g, cmd)
	return cmd
}

func shortRecipient(r string) string {
	if len(r) > 40 {
		return r[:37] + "…"
	}
	return r
}

func newSecretRmCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rm NODE|@group NAME",
		Short: "Remove a secret: its retained message, and the file on each machine",
		Long: `rm clears the retained secret of each target; labd removes the file (and
keeps the version it had, so the old secret cannot be replayed). A machine
offline now removes it when it reconnects.`,
		Example: `  labctl secret rm db1 postgres-password
  labctl secret rm @web tls-key`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[1]
			if err := proto.ValidID(name); err != nil {
				return usageError{fmt.Errorf("NAME %q: %w", name, err)}
			}
			conn, err := connectTo(cmd.Context(), g, statusFilters)
			if err != nil {
				return err
			}
			defer conn.close()
			targets, err := secretTargets(args[0], conn.fleet)
			if err != nil {
				return err
			}
			for _, n := range targets {
				if err := conn.bus.Publish(cmd.Context(), conn.topics.NodeSecret(n, name), nil, true); err != nil {
					return fmt.Errorf("remove secret %s of %s: %w", name, n, err)
				}
				fmt.Fprintf(g.out, "%s: secret %s removed (labd deletes the file)\n", n, name)
			}
			return nil
		},
	}
	addClientFlags(g, cmd)
	return cmd
}

// secretLine is one row of labctl secret list --json.
type secretLine struct {
	Node string `json:"node"`
	proto.SecretState
}

func newSecretListCmd(g *globals) *cobra.Command {
	var on string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--on SEL] [--json]",
		Short: "List each machine's secrets as it reports them: version, state, error",
		Long: `list reads the retained statuses: each machine reports its secrets — name,
version, path, present or error and why — never their content.`,
		Example: `  labctl secret list
  labctl secret list --on @web --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			views, err := secretViews(cmd, g, on)
			if err != nil {
				return err
			}
			var lines []secretLine
			for _, v := range views {
				for _, s := range v.Status.Secrets {
					lines = append(lines, secretLine{Node: v.Name, SecretState: s})
				}
			}
			if asJSON {
				if lines == nil {
					lines = []secretLine{}
				}
				return render.WriteJSON(g.out, lines)
			}
			tw := tabwriter.NewWriter(g.out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tSECRET\tVERSION\tSTATE\tPATH\tERROR")
			for _, l := range lines {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", l.Node, l.Name, l.Version, l.State, l.Path, l.Error)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&on, "on", "", "only these machines: `@group` or node names, comma-separated")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addClientFlags(g, cmd)
	return cmd
}

// recipientLine is one row of labctl secret recipients --json.
type recipientLine struct {
	Node      string `json:"node"`
	Recipient string `json:"recipient"`
}

func newSecretRecipientsCmd(g *globals) *cobra.Command {
	var on string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "recipients [--on SEL] [--json]",
		Short: "List each machine's age recipient (the key its secrets are encrypted to)",
		Long: `recipients reads the retained statuses: each labd reports its recipient, its
SSH host key ("ssh-ed25519 AAAA…", as ssh-keyscan prints it) or an age
identity it made ("age1…"). A machine that reports none is listed with "-".`,
		Example: `  labctl secret recipients
  labctl secret recipients --on @web --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			views, err := secretViews(cmd, g, on)
			if err != nil {
				return err
			}
			lines := []recipientLine{}
			for _, v := range views {
				lines = append(lines, recipientLine{Node: v.Name, Recipient: v.Status.Recipient})
			}
			if asJSON {
				return render.WriteJSON(g.out, lines)
			}
			tw := tabwriter.NewWriter(g.out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tRECIPIENT")
			for _, l := range lines {
				r := l.Recipient
				if r == "" {
					r = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\n", l.Node, r)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&on, "on", "", "only these machines: `@group` or node names, comma-separated")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addClientFlags(g, cmd)
	return cmd
}

// secretViews are the machines with a retained status, by name, or
// those --on selects.
func secretViews(cmd *cobra.Command, g *globals, on string) ([]controller.NodeView, error) {
	if on != "" {
		if _, err := parseOn(on); err != nil {
			return nil, usageError{err}
		}
	}
	conn, err := connectTo(cmd.Context(), g, statusFilters)
	if err != nil {
		return nil, err
	}
	defer conn.close()
	var names []string
	if on != "" {
		if names, err = selectNodes(on, conn.fleet); err != nil {
			return nil, usageError{err}
		}
	}
	var out []controller.NodeView
	for _, v := range conn.fleet.Snapshot() {
		if v.Status != nil && (on == "" || slices.Contains(names, v.Name)) {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b controller.NodeView) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
