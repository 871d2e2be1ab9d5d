package access

import (
	"strings"
)

// CanPublish reports whether id may publish to topic (a topic name, no
// wildcards).
func (t *Table) CanPublish(id Identity, topic string) bool {
	if strings.ContainsAny(topic, "+#") {
		return false
	}
	for _, p := range t.publishes(id) {
		if covers(p, topic) {
			return true
		}
	}
	return false
}

// CanSubscribe reports whether id may subscribe to filter: every topic the
// filter can match must be one id may read.
func (t *Table) CanSubscribe(id Identity, filter string) bool {
	for _, p := range t.reads(id) {
		if covers(p, filter) {
			return true
		}
	}
	return false
}

func (t *Table) publishes(id Identity) []string {
	tp := t.topics
	switch id.Role {
	case RoleNode:
		return []string{tp.NodeStatus(id.Name), tp.NodePresence(id.Name), tp.NodeEvents(id.Name)}
	case RoleController:
		return []string{tp.AllDesired(), tp.NodeCmd("+"), tp.AllGates(), tp.GroupCmd("+"), tp.AllCmd(), tp.AllRollouts()}
	}
	return nil
}

func (t *Table) reads(id Identity) []string {
	tp := t.topics
	switch id.Role {
	case RoleNode:
		out := []string{tp.NodeDesired(id.Name), tp.NodeCmd(id.Name), tp.AllCmd()}
		for _, g := range id.Groups {
			out = append(out, tp.GroupGate(g), tp.GroupCmd(g))
		}
		return out
	case RoleController:
		return []string{tp.Prefix() + "/#"}
	case RoleViewer:
		return []string{tp.AllStatus(), tp.AllPresence(), tp.AllEvents(), tp.AllRollouts(), tp.Prefix() + "/json/#"}
	}
	return nil
}

// covers reports whether every topic matched by filter f is matched by the
// pattern p (both MQTT filters): p "+" covers one level of anything but
// "#", p "#" covers the rest, literals must be equal.
func covers(p, f string) bool {
	pl, fl := strings.Split(p, "/"), strings.Split(f, "/")
	for i, pp := range pl {
		if pp == "#" {
			return true
		}
		if i >= len(fl) {
			return false
		}
		switch fp := fl[i]; {
		case fp == "#":
			return false
		case pp == "+":
			continue
		case pp != fp:
			return false
		}
	}
	return len(pl) == len(fl)
}
