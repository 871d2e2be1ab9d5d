package proto

import (
	"fmt"
	"strings"
)

// Topic layout (DESIGN §4), under a configurable prefix (default "lab/v1"):
//
//	<p>/node/<node>/desired   controller → node, retained   Desired
//	<p>/node/<node>/cmd       controller → node             Command
//	<p>/node/<node>/status    node, retained                NodeStatus
//	<p>/node/<node>/presence  node + Last Will, retained    Presence
//	<p>/node/<node>/events    node                          Event
//	<p>/node/<node>/secret/<name>  controller → that node only, retained  Secret (empty = removed)
//	<p>/group/<group>/gate    controller, retained          Gate
//	<p>/group/<group>/cmd     controller                    Command
//	<p>/all/cmd               controller                    Command
//	<p>/rollout/<id>          controller, retained          RolloutState
//	<p>/json/...              embedded broker               JSON mirror
//
// and the controller service's request/response API (DESIGN §11, MQTT v5):
//
//	<p>/ctl/req/<verb>          controller-role client → service   request, with Response Topic and Correlation Data
//	<p>/ctl/res/<client>/<id>   service → that client              response (only <client> may read it)
//
// <client> names the requester: its identity (username or certificate
// CN) when the broker has identities, which the access rules let read
// only its own responses; <id> is any identifier it picks. The ctl topics
// are not mirrored under json/.
//
// No topic is longer than 7 slashes, so the layout also fits brokers with
// AWS IoT-like limits.

// TopicKind names a kind of topic in the layout.
type TopicKind string

// The topic kinds.
const (
	TopicDesired  TopicKind = "desired"
	TopicNodeCmd  TopicKind = "node-cmd"
	TopicStatus   TopicKind = "status"
	TopicPresence TopicKind = "presence"
	TopicEvents   TopicKind = "events"
	TopicGate     TopicKind = "gate"
	TopicGroupCmd TopicKind = "group-cmd"
	TopicAllCmd   TopicKind = "all-cmd"
	TopicRollout  TopicKind = "rollout"
	TopicSecret   TopicKind = "secret"

	TopicCtlRequest  TopicKind = "ctl-request"
	TopicCtlResponse TopicKind = "ctl-response"
)

// MaxTopicSlashes bounds the depth of every topic of the layout.
const MaxTopicSlashes = 7

// deepest is the number of slashes the layout adds to the prefix at most
// ("/json/node/<node>/status", "/ctl/res/<client>/<id>").
const deepest = 4

// Topics builds and parses the topics of one prefix.
type Topics struct{ prefix string }

// NewTopics validates prefix ("" means DefaultPrefix) and returns its layout.
func NewTopics(prefix string) (Topics, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if strings.ContainsAny(prefix, "+#\x00") || strings.HasPrefix(prefix, "$") ||
		strings.HasPrefix(prefix, "/") || strings.HasSuffix(prefix, "/") || strings.Contains(prefix, "//") {
		return Topics{}, fmt.Errorf("%w: prefix %q: no wildcards, '$', empty levels or leading/trailing '/'", ErrInvalidTopic, prefix)
	}
	if n := strings.Count(prefix, "/"); n+deepest > MaxTopicSlashes {
		return Topics{}, fmt.Errorf("%w: prefix %q has %d slashes; at most %d leave room for the layout", ErrInvalidTopic, prefix, n, MaxTopicSlashes-deepest)
	}
	return Topics{prefix: prefix}, nil
}

// DefaultTopics is the layout under DefaultPrefix.
var DefaultTopics = Topics{prefix: DefaultPrefix}

// Prefix returns the prefix.
func (t Topics) Prefix() string { return t.prefix }

func (t Topics) node(node, leaf string) string   { return t.prefix + "/node/" + node + "/" + leaf }
func (t Topics) group(group, leaf string) string { return t.prefix + "/group/" + group + "/" + leaf }

// NodeDesired is a node's retained desired state.
func (t Topics) NodeDesired(node string) string { return t.node(node, "desired") }

// NodeCmd carries one-shot commands to one node.
func (t Topics) NodeCmd(node string) string { return t.node(node, "cmd") }

// NodeStatus is a node's retained status.
func (t Topics) NodeStatus(node string) string { return t.node(node, "status") }

// NodePresence is a node's retained online/offline flag (also its Last Will).
func (t Topics) NodePresence(node string) string { return t.node(node, "presence") }

// NodeEvents carries a node's execution events.
func (t Topics) NodeEvents(node string) string { return t.node(node, "events") }

// NodeSecret is a node's retained secret name (not mirrored under json/).
func (t Topics) NodeSecret(node, name string) string { return t.node(node, "secret/"+name) }

// NodeSecrets matches every secret of a node (what labd subscribes to).
func (t Topics) NodeSecrets(node string) string { return t.NodeSecret(node, "+") }

// AllSecrets matches every secret of every node.
func (t Topics) AllSecrets() string { return t.NodeSecret("+", "+") }

// GroupGate is a group's retained rollout gate.
func (t Topics) GroupGate(group string) string { return t.group(group, "gate") }

// GroupCmd carries one-shot commands to a group.
func (t Topics) GroupCmd(group string) string { return t.group(group, "cmd") }

// AllCmd carries one-shot commands to every node.
func (t Topics) AllCmd() string { return t.prefix + "/all/cmd" }

// Rollout is a rollout's retained state.
func (t Topics) Rollout(id string) string { return t.prefix + "/rollout/" + id }

// Filters matching one leaf for every node, group or rollout.
func (t Topics) AllDesired() string  { return t.NodeDesired("+") }
func (t Topics) AllStatus() string   { return t.NodeStatus("+") }
func (t Topics) AllPresence() string { return t.NodePresence("+") }
func (t Topics) AllEvents() string   { return t.NodeEvents("+") }
func (t Topics) AllGates() string    { return t.GroupGate("+") }
func (t Topics) AllRollouts() string { return t.Rollout("+") }

// CtlRequest is where requests with verb go to the controller service.
func (t Topics) CtlRequest(verb string) string { return t.prefix + "/ctl/req/" + verb }

// CtlRequests matches every request (what the controller service subscribes to).
func (t Topics) CtlRequests() string { return t.CtlRequest("+") }

// CtlResponse is the response topic a client names in its request: id
// tells its own requests apart.
func (t Topics) CtlResponse(client, id string) string {
	return t.prefix + "/ctl/res/" + client + "/" + id
}

// CtlResponses matches every response to client.
func (t Topics) CtlResponses(client string) string { return t.prefix + "/ctl/res/" + client + "/#" }

// JSON returns the JSON-mirror topic of a layout topic
// (<p>/node/n1/status → <p>/json/node/n1/status).
func (t Topics) JSON(topic string) string {
	return t.prefix + "/json" + strings.TrimPrefix(topic, t.prefix)
}

// Route is a parsed topic.
type Route struct {
	Kind   TopicKind
	Node   string // node topics
	Group  string // group topics
	ID     string // rollout topics: the rollout; ctl-request: the verb; ctl-response: the client's id; secret: its name
	Client string // ctl-response: the client the response is for
}

// Parse maps a topic of this layout to its Route. The identifiers in it are
// validated.
func (t Topics) Parse(topic string) (Route, error) {
	rest, ok := strings.CutPrefix(topic, t.prefix+"/")
	if !ok {
		return Route{}, fmt.Errorf("%w: %q is not under prefix %q", ErrInvalidTopic, topic, t.prefix)
	}
	parts := strings.Split(rest, "/")
	bad := func() (Route, error) { return Route{}, fmt.Errorf("%w: %q is not a lab topic", ErrInvalidTopic, topic) }
	var r Route
	switch {
	case len(parts) == 3 && parts[0] == "node":
		r.Node = parts[1]
		switch parts[2] {
		case "desired":
			r.Kind = TopicDesired
		case "cmd":
			r.Kind = TopicNodeCmd
		case "status":
			r.Kind = TopicStatus
		case "presence":
			r.Kind = TopicPresence
		case "events":
			r.Kind = TopicEvents
		default:
			return bad()
		}
		if err := ValidID(r.Node); err != nil {
			return Route{}, fmt.Errorf("%w: node in %q: %v", ErrInvalidTopic, topic, err)
		}
	case len(parts) == 4 && parts[0] == "node" && parts[2] == "secret":
		r.Kind, r.Node, r.ID = TopicSecret, parts[1], parts[3]
		if err := ValidID(r.Node); err != nil {
			return Route{}, fmt.Errorf("%w: node in %q: %v", ErrInvalidTopic, topic, err)
		}
		if err := ValidID(r.ID); err != nil {
			return Route{}, fmt.Errorf("%w: secret name in %q: %v", ErrInvalidTopic, topic, err)
		}
	case len(parts) == 3 && parts[0] == "group":
		r.Group = parts[1]
		switch parts[2] {
		case "gate":
			r.Kind = TopicGate
		case "cmd":
			r.Kind = TopicGroupCmd
		default:
			return bad()
		}
		if err := ValidID(r.Group); err != nil {
			return Route{}, fmt.Errorf("%w: group in %q: %v", ErrInvalidTopic, topic, err)
		}
	case len(parts) == 2 && parts[0] == "all" && parts[1] == "cmd":
		r.Kind = TopicAllCmd
	case len(parts) == 2 && parts[0] == "rollout":
		r.Kind, r.ID = TopicRollout, parts[1]
		if err := ValidID(r.ID); err != nil {
			return Route{}, fmt.Errorf("%w: rollout in %q: %v", ErrInvalidTopic, topic, err)
		}
	case len(parts) == 3 && parts[0] == "ctl" && parts[1] == "req":
		r.Kind, r.ID = TopicCtlRequest, parts[2]
		if err := ValidID(r.ID); err != nil {
			return Route{}, fmt.Errorf("%w: verb in %q: %v", ErrInvalidTopic, topic, err)
		}
	case len(parts) == 4 && parts[0] == "ctl" && parts[1] == "res":
		r.Kind, r.Client, r.ID = TopicCtlResponse, parts[2], parts[3]
		if err := ValidID(r.Client); err != nil {
			return Route{}, fmt.Errorf("%w: client in %q: %v", ErrInvalidTopic, topic, err)
		}
		if err := ValidID(r.ID); err != nil {
			return Route{}, fmt.Errorf("%w: response id in %q: %v", ErrInvalidTopic, topic, err)
		}
	default:
		return bad()
	}
	return r, nil
}
