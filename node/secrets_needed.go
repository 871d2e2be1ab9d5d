package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"

	"github.com/lab-fleet/lab/proto"
)

// Rollouts that need secrets (docs/secrets.md): a system built with
// lab.machine.secrets says what it expects in its own
// etc/lab/secrets.json. After fetching it and before activating it, labd
// reads that file (fetch, steps.go); the execution stays fetching, with
// "waiting for secret NAME", until every declared secret is present with
// the path, owner, group and mode the system gives (those it gives), under
// the fetch deadline. Which secrets
// are present is a fact the secret keeper's goroutine sends the loop
// (evSecrets); the transitions here are pure, part of next (machine.go).

// declaredSecretsFile is where a system declares its secrets.
const declaredSecretsFile = "etc/lab/secrets.json"

// declaredSecret is one entry of etc/lab/secrets.json (nix/modules/machine.nix).
type declaredSecret struct {
	Path         string   `json:"path,omitempty"`
	Owner        string   `json:"owner,omitempty"`
	Group        string   `json:"group,omitempty"`
	Mode         string   `json:"mode,omitempty"`
	RestartUnits []string `json:"restart_units,omitempty"`
}

// need is what an execution waits for: a secret by name, and what the
// system declares of its file: path, owner, group and mode ("" and 0: any).
type need struct {
	Name  string `json:"name"`
	Path  string `json:"path,omitempty"`
	Owner string `json:"owner,omitempty"`
	Group string `json:"group,omitempty"`
	Mode  uint32 `json:"mode,omitempty"`
}

// held is a secret in place: its file, and the owner, group and mode the
// Secret gave it (Mode 0: not recorded).
type held struct {
	Path, Owner, Group string
	Mode               uint32
}

// parseDeclared reads a system's etc/lab/secrets.json; b nil (the file
// is absent) declares nothing. The needs come sorted by name.
func parseDeclared(b []byte) ([]need, error) {
	if b == nil {
		return nil, nil
	}
	var decl map[string]declaredSecret
	if err := json.Unmarshal(b, &decl); err != nil {
		return nil, fmt.Errorf("%s: %w", declaredSecretsFile, err)
	}
	if len(decl) > proto.MaxReportedSecrets {
		return nil, fmt.Errorf("%s: %d secrets, at most %d", declaredSecretsFile, len(decl), proto.MaxReportedSecrets)
	}
	var out []need
	for name, d := range decl {
		if err := proto.ValidID(name); err != nil {
			return nil, fmt.Errorf("%s: secret name %q: %w", declaredSecretsFile, name, err)
		}
		if d.Path != "" {
			if err := proto.ValidSecretPath(d.Path); err != nil {
				return nil, fmt.Errorf("%s: secret %s: path: %w", declaredSecretsFile, name, err)
			}
		}
		n := need{Name: name, Path: d.Path, Owner: d.Owner, Group: d.Group}
		if d.Mode != "" {
			mode, err := strconv.ParseUint(d.Mode, 8, 32)
			if err != nil || mode > 0o777 {
				return nil, fmt.Errorf("%s: secret %s: mode %q is not an octal mode such as 0400", declaredSecretsFile, name, d.Mode)
			}
			n.Mode = uint32(mode)
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// readDeclared reads and parses what toplevel declares.
func readDeclared(read func(toplevel, name string) ([]byte, error), toplevel string) ([]need, error) {
	b, err := read(toplevel, declaredSecretsFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read %s of %s: %w", declaredSecretsFile, toplevel, err)
	}
	if b == nil {
		b = []byte{}
	}
	return parseDeclared(b)
}

// evSecrets: the secrets present on the machine now (by name), sent
// by the secret keeper whenever they change, and once at start.
type evSecrets struct{ present map[string]held }

// missing is the first need that is not met, and why ("" when all are).
func missing(needs []need, present map[string]held) (string, string) {
	for _, n := range needs {
		h, ok := present[n.Name]
		if !ok {
			return n.Name, "waiting for secret " + n.Name
		}
		differs := func(what, want, has string) (string, string) {
			return n.Name, fmt.Sprintf("waiting for secret %s with %s %s, as the new system declares (it has %s %s: set it again with --%s %s)", n.Name, what, want, what, has, what, want)
		}
		switch {
		case n.Path != "" && h.Path != n.Path:
			return differs("path", n.Path, h.Path)
		case n.Owner != "" && h.Owner != n.Owner:
			return differs("owner", n.Owner, orNone(h.Owner))
		case n.Group != "" && h.Group != n.Group:
			return differs("group", n.Group, orNone(h.Group))
		case n.Mode != 0 && h.Mode != 0 && h.Mode != n.Mode:
			return differs("mode", fmt.Sprintf("%04o", n.Mode), fmt.Sprintf("%04o", h.Mode))
		}
	}
	return "", ""
}

func orNone(s string) string {
	if s == "" {
		return "none (labd's own)"
	}
	return s
}

// fetched continues a fetched execution: it activates when every secret
// the new system declares is present, or waits, still fetching, saying
// for which one (the fetch deadline still runs).
func (m machine) fetched(s state) (state, []effect) {
	name, why := missing(s.Needs, s.Present)
	if name == "" {
		s.WaitSecret = ""
		return m.activating(s)
	}
	if name == s.WaitSecret && why == s.Exec.Error {
		return s, nil
	}
	s.WaitSecret, s.Exec.Error = name, why
	cur := s.Exec.State
	return s, []effect{effPersist{}, effEvent{cur, cur, why}, effStatus{}}
}

// onSecrets records which secrets are present; an execution waiting for
// one goes on.
func (m machine) onSecrets(s state, e evSecrets) (state, []effect) {
	s.Present = e.present
	if s.Exec.State != proto.StateFetching || s.WaitSecret == "" {
		return s, nil
	}
	return m.fetched(s)
}

// presentSecrets lists the secrets in place: recorded present and their
// file exists (exists is os.Lstat's verdict, injected for tests).
func presentSecrets(recs map[string]secretRecord, exists func(path string) bool) map[string]held {
	out := map[string]held{}
	for n, r := range recs {
		if !r.Removed && r.State == proto.SecretPresent && r.Path != "" && exists(r.Path) {
			out[n] = held{Path: r.Path, Owner: r.Owner, Group: r.Group, Mode: r.Mode}
		}
	}
	return out
}
