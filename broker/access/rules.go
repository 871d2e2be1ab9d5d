package access

import (
	"slices"
	"strings"

	"github.com/lab-fleet/lab/proto"
)

// Home Assistant's MQTT discovery (labctl broker --homeassistant) under
// its default discovery prefix: the controller service publishes the
// configs there, and reads the birth topic, where Home Assistant — a
// viewer — says online (its Last Will says offline there too).
const (
	HomeAssistantPrefix = "homeassistant"
	HomeAssistantBirth  = HomeAssistantPrefix + "/status"
)

// haState is the filter of the JSON states the discovery configs read
// (<p>/ha/<machine>/state).
func haState(tp proto.Topics) string { return tp.Prefix() + "/ha/#" }

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

// patterns are an identity's topic patterns, built once per identity.
type patterns struct {
	id             Identity
	publish, reads []string
}

func (t *Table) publishes(id Identity) []string {
	if c, ok := t.cached(id); ok {
		return c.publish
	}
	return t.buildPublishes(id)
}

func (t *Table) reads(id Identity) []string {
	if c, ok := t.cached(id); ok {
		return c.reads
	}
	return t.buildReads(id)
}

// cached returns the patterns built by New for id, if id is the
// identity the table holds under its name (same role and groups).
func (t *Table) cached(id Identity) (patterns, bool) {
	c, ok := t.patterns[id.Name]
	if !ok || c.id.Role != id.Role || !slices.Equal(c.id.Groups, id.Groups) {
		return patterns{}, false
	}
	return c, true
}

func (t *Table) buildPublishes(id Identity) []string {
	tp := t.topics
	switch id.Role {
	case RoleNode:
		return []string{tp.NodeStatus(id.Name), tp.NodePresence(id.Name), tp.NodeEvents(id.Name)}
	case RoleController:
		// Besides desired state, gates, commands and rollouts: requests to
		// the controller service, (the service's identity) its answers to
		// any client, and Home Assistant's discovery configs and states.
		// Secrets too (labctl secret set): their content is encrypted to
		// the node's own key, so a controller only ever sees ciphertext.
		return []string{tp.AllDesired(), tp.NodeCmd("+"), tp.AllSecrets(), tp.AllGates(), tp.GroupCmd("+"), tp.AllCmd(), tp.AllRollouts(),
			tp.CtlRequests(), tp.CtlResponses("+"), HomeAssistantPrefix + "/#", haState(tp)}
	case RoleViewer:
		// Home Assistant's birth message and Last Will, which make the
		// controller service publish its discovery configs again.
		return []string{HomeAssistantBirth}
	}
	return nil
}

func (t *Table) buildReads(id Identity) []string {
	tp := t.topics
	switch id.Role {
	case RoleNode:
		// Its own presence too: labd answers a late Last Will of an
		// earlier connection (offline while it runs) with online. Its own
		// secrets: no other node may read them.
		out := []string{tp.NodeDesired(id.Name), tp.NodeCmd(id.Name), tp.AllCmd(), tp.NodePresence(id.Name), tp.NodeSecrets(id.Name)}
		for _, g := range id.Groups {
			out = append(out, tp.GroupGate(g), tp.GroupCmd(g))
		}
		return out
	case RoleController:
		// All of lab but the answers to other clients: <p>/ctl/res/<name>/
		// is for <name> alone; and Home Assistant's birth topic.
		p := tp.Prefix()
		return []string{p + "/node/#", p + "/group/#", p + "/all/#", p + "/rollout/#", p + "/json/#",
			tp.CtlRequests(), tp.CtlResponses(id.Name), haState(tp), HomeAssistantBirth}
	case RoleViewer:
		// What generic clients watch, and what Home Assistant reads: its
		// discovery configs and the JSON states they name.
		return []string{tp.AllStatus(), tp.AllPresence(), tp.AllEvents(), tp.AllRollouts(), tp.Prefix() + "/json/#",
			HomeAssistantPrefix + "/#", haState(tp)}
	}
	return nil
}

// covers reports whether every topic matched by filter f is matched by the
// pattern p (both MQTT filters): p "+" covers one level of anything but
// "#", p "#" covers the rest, literals must be equal.
// It walks both level by level without allocating: it runs for every
// publish and every subscription the broker checks.
func covers(p, f string) bool {
	for {
		pp, prest, pmore := strings.Cut(p, "/")
		if pp == "#" {
			return true
		}
		fp, frest, fmore := strings.Cut(f, "/")
		switch {
		case fp == "#":
			return false
		case pp != "+" && pp != fp:
			return false
		}
		switch {
		case !pmore:
			return !fmore
		case !fmore:
			// "a/#" also covers its parent "a".
			next, _, _ := strings.Cut(prest, "/")
			return next == "#"
		}
		p, f = prest, frest
	}
}
