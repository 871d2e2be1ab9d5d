package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lab-fleet/lab/proto"
)

// onTerm is one element of --on: a group (@name) or a node name.
type onTerm struct{ group, node string }

func (t onTerm) String() string {
	if t.group != "" {
		return "@" + t.group
	}
	return t.node
}

// parseOn parses --on: "@group" and node names, comma-separated, each a
// valid lab identifier. Empty elements are ignored; nothing at all is an
// error.
func parseOn(on string) ([]onTerm, error) {
	var out []onTerm
	for _, s := range strings.Split(on, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		t := onTerm{node: s}
		if g, ok := strings.CutPrefix(s, "@"); ok {
			t = onTerm{group: g}
		}
		if err := proto.ValidID(t.group + t.node); err != nil {
			return nil, fmt.Errorf("--on %s: %w", s, err)
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, errors.New("--on selects nothing: give @group or node names, comma-separated")
	}
	return out, nil
}

// resolve returns the nodes terms select, each once, in the order given;
// members lists a group's nodes. A group without members is an error
// ending in noMembers (why, e.g. "no node has reported membership of it").
func resolve(terms []onTerm, members func(group string) []string, noMembers string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, t := range terms {
		names := []string{t.node}
		if t.group != "" {
			if names = members(t.group); len(names) == 0 {
				return nil, fmt.Errorf("--on %s: %s", t, noMembers)
			}
		}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out, nil
}
