package nixsys

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// SystemFile reads <toplevel>/<name>, a file of a realised system.
func (n *Nix) SystemFile(toplevel, name string) ([]byte, error) {
	if err := ValidStorePath(toplevel); err != nil {
		return nil, err
	}
	if !filepath.IsLocal(name) {
		return nil, fmt.Errorf("system file %q: not a relative path inside the system", name)
	}
	return os.ReadFile(filepath.Join(toplevel, name))
}

// Current returns the store path the profile points to, "" if the profile
// does not exist yet.
func (n *Nix) Current() (string, error) {
	p, err := resolveLink(n.cfg.Profile)
	if err != nil {
		return "", fmt.Errorf("current system: %w", err)
	}
	return p, nil
}

// Booted returns the store path BootedLink points to, "" if it is missing.
func (n *Nix) Booted() (string, error) {
	p, err := resolveLink(n.cfg.BootedLink)
	if err != nil {
		return "", fmt.Errorf("booted system: %w", err)
	}
	return p, nil
}

// Running returns the store path CurrentLink (/run/current-system) points
// to, "" if it is missing. Informational: the profile is the truth.
func (n *Nix) Running() (string, error) {
	p, err := resolveLink(n.cfg.CurrentLink)
	if err != nil {
		return "", fmt.Errorf("running system: %w", err)
	}
	return p, nil
}

// Profile returns the system profile's path.
func (n *Nix) Profile() string { return n.cfg.Profile }

// Generations lists the profile's generations, oldest first, from the
// <profile>-N-link symlinks beside it (not from nix-env's text output).
// A missing profile directory gives no generations and no error.
func (n *Nix) Generations() ([]Generation, error) {
	dir, base := filepath.Split(n.cfg.Profile)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("generations: %w", err)
	}
	current, err := os.Readlink(n.cfg.Profile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("generations: %w", err)
	}
	var gens []Generation
	for _, e := range entries {
		num, ok := generationNumber(base, e.Name())
		if !ok {
			continue
		}
		link := filepath.Join(dir, e.Name())
		target, err := os.Readlink(link)
		if err != nil {
			return nil, fmt.Errorf("generation %d: %w", num, err)
		}
		var created time.Time
		if fi, err := os.Lstat(link); err == nil {
			created = fi.ModTime()
		}
		gens = append(gens, Generation{
			Created:  created,
			Number:   num,
			Toplevel: target,
			Current:  current == e.Name() || current == link,
			Link:     link,
		})
	}
	sort.Slice(gens, func(i, j int) bool { return gens[i].Number < gens[j].Number })
	return gens, nil
}

// generationNumber parses "<base>-<N>-link".
func generationNumber(base, name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, base+"-")
	if !ok {
		return 0, false
	}
	digits, ok := strings.CutSuffix(rest, "-link")
	if !ok || digits == "" {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	num, err := strconv.Atoi(digits)
	return num, err == nil
}

// resolveLink follows the symlink chain at path (profile -> profile-N-link
// -> /nix/store/...) until it reaches the store, and returns the top-level
// store path. A missing link gives "" and no error. A chain that leaves the
// store ends at the first path that is not a symlink.
func resolveLink(path string) (string, error) {
	cur := path
	for range 16 {
		if top, ok := storeTop(cur); ok {
			return top, nil
		}
		target, err := os.Readlink(cur)
		if errors.Is(err, fs.ErrNotExist) {
			if cur == path {
				return "", nil
			}
			return "", fmt.Errorf("%s: dangling link to %s", path, cur)
		}
		if errors.Is(err, syscall.EINVAL) {
			return cur, nil // not a symlink: the chain ends here
		}
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(cur), target)
		}
		cur = target
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", path)
}

// storeTop returns /nix/store/<hash>-<name> when p is that path or inside it.
func storeTop(p string) (string, bool) {
	rest, ok := strings.CutPrefix(p, proto.StoreDir)
	if !ok {
		return "", false
	}
	top := proto.StoreDir + strings.SplitN(rest, "/", 2)[0]
	return top, ValidStorePath(top) == nil
}
