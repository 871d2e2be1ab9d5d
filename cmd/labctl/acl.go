package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lab-fleet/lab/broker/access"
	"github.com/lab-fleet/lab/proto"
	"github.com/spf13/cobra"
)

func newACLCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "acl", Short: "Export the broker's access rules for another broker"}
	var format, identities, out, passwords, owner string
	export := &cobra.Command{
		Use:   "export --format mosquitto --identities FILE --out DIR [--passwords DIR --owner USER]",
		Short: "Write the identities and rules as a mosquitto password file and ACL file",
		Long: `export writes the rules the embedded broker enforces (docs/security.md) for
mosquitto: DIR/acl (per-user topic lines and %u patterns; anything else is
denied) and, with --passwords (the directory labctl node add wrote the
NAME.password files to), DIR/passwd in mosquitto's own hash format. Point
mosquitto's acl_file and password_file at them, with allow_anonymous false.

passwd is always written mode 0600 (replacing the file, whatever mode it
had), so only its owner can read it. mosquitto reads it as the user it drops
to (mosquitto on Debian and NixOS): give it the files with --owner mosquitto
(labctl must then run as root), or mosquitto refuses to start.`,
		Example: `  labctl node add web --groups servers --identities identities.yaml --out secrets
  labctl acl export --format mosquitto --identities identities.yaml --passwords secrets --out /etc/mosquitto/lab --owner mosquitto`,
		Args: cobra.NoArgs,
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
			uid, gid, err := lookupOwner(owner)
			if err != nil {
				return usageError{err}
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			if err := writeFileAs(filepath.Join(out, "acl"), []byte(t.MosquittoACL()), 0o644, uid, gid); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "wrote %s\n", filepath.Join(out, "acl"))
			if passwords == "" {
				return nil
			}
			lines, err := mosquittoPasswd(f, passwords, g.errOut)
			if err != nil {
				return err
			}
			path := filepath.Join(out, "passwd")
			if err := writeFileAs(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600, uid, gid); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "wrote %s (%d users, mode 0600)\n", path, len(lines))
			if owner == "" {
				fmt.Fprintf(g.errOut, "note: %s is readable only by uid %d (this user); a mosquitto that drops to its own user cannot read it: add --owner mosquitto (as root)\n", path, os.Geteuid())
			}
			return nil
		},
	}
	fl := export.Flags()
	fl.StringVar(&format, "format", "mosquitto", "target broker: mosquitto")
	fl.StringVar(&identities, "identities", "", "the identities `FILE`")
	fl.StringVar(&out, "out", "", "output `DIR`")
	fl.StringVar(&passwords, "passwords", "", "`DIR` with the NAME.password files of labctl node add (for the passwd file)")
	fl.StringVar(&owner, "owner", "", "the `USER[:GROUP]` to own acl and passwd: the user mosquitto runs as (needs root)")
	cmd.AddCommand(export)
	return cmd
}

// mosquittoPasswd is one passwd line per identity whose NAME.password is
// in dir; an identity without one is left out with a warning, none at all
// is an error.
func mosquittoPasswd(f access.File, dir string, warn io.Writer) ([]string, error) {
	var lines []string
	for _, id := range f.Identities {
		b, err := os.ReadFile(filepath.Join(dir, id.Name+".password"))
		if err != nil {
			fmt.Fprintf(warn, "warning: %s: no password file, left out of passwd: %v\n", id.Name, err)
			continue
		}
		line, err := access.MosquittoPassword(id.Name, []byte(strings.TrimSpace(string(b))))
		if err != nil {
			return nil, err
		}
		lines = append(lines, line)
	}
	if len(lines) == 0 && len(f.Identities) > 0 {
		return nil, fmt.Errorf("--passwords %s: no NAME.password file for any of the %d identities (labctl node add writes them to its --out DIR, default .)", dir, len(f.Identities))
	}
	return lines, nil
}

// lookupOwner resolves --owner USER[:GROUP] (names or numbers; GROUP
// defaults to USER's primary group). "" means the writing user: -1, -1.
func lookupOwner(owner string) (uid, gid int, err error) {
	if owner == "" {
		return -1, -1, nil
	}
	name, group, _ := strings.Cut(owner, ":")
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return 0, 0, fmt.Errorf("--owner %q: no such user", owner)
		}
	}
	gidStr := u.Gid
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			if g, err = user.LookupGroupId(group); err != nil {
				return 0, 0, fmt.Errorf("--owner %q: no such group %q", owner, group)
			}
		}
		gidStr = g.Gid
	}
	if uid, err = strconv.Atoi(u.Uid); err != nil {
		return 0, 0, fmt.Errorf("--owner %q: uid %q: %w", owner, u.Uid, err)
	}
	if gid, err = strconv.Atoi(gidStr); err != nil {
		return 0, 0, fmt.Errorf("--owner %q: gid %q: %w", owner, gidStr, err)
	}
	return uid, gid, nil
}

// writeFileAs replaces path with data, mode perm and owner uid:gid (-1:
// the writing user's), through a temporary file in the same directory: the
// mode is never the one an older file had, and a reader never sees half a
// file.
func writeFileAs(path string, data []byte, perm os.FileMode, uid, gid int) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*") // 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing to remove
	if uid >= 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			tmp.Close()
			return fmt.Errorf("give %s to %d:%d: %w", path, uid, gid, err)
		}
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
