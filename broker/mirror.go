package broker

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/lab-fleet/lab/proto"
)

// mirrorHook publishes a JSON copy of every node status, presence and
// event and every rollout state under <prefix>/json/ (DESIGN §4), so that
// generic MQTT clients — mosquitto_sub, Home Assistant, Node-RED, a
// Grafana MQTT source — can read live fleet state without msgpack:
//
//	lab/v1/node/n1/status → lab/v1/json/node/n1/status
//
// A copy is retained when the original is, cleared when the original is
// cleared, and published by the broker itself (clients cannot write under
// json/: the access rules give viewers read access only). Only messages
// that decode as what their topic says are mirrored. The mirror is a
// convenience of the embedded broker; nothing in lab reads it, and an
// external broker can build the same with its own rule engine.
//
// A message that is not retained (an event) is copied only while someone
// subscribes to its copy: nobody could read it later.
type mirrorHook struct {
	mqtt.HookBase
	topics     proto.Topics
	publish    func(topic string, payload []byte, retain bool) error
	subscribed func(topic string) bool // someone would receive a message on topic
	log        *slog.Logger
}

func (h *mirrorHook) ID() string { return "lab-json-mirror" }

func (h *mirrorHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnPublished, mqtt.OnWillSent}, []byte{b})
}

// OnPublished mirrors a message a client published.
func (h *mirrorHook) OnPublished(_ *mqtt.Client, pk packets.Packet) { h.mirror(pk) }

// OnWillSent mirrors a Last Will (a node's presence going offline).
func (h *mirrorHook) OnWillSent(_ *mqtt.Client, pk packets.Packet) { h.mirror(pk) }

func (h *mirrorHook) mirror(pk packets.Packet) {
	topic, m, ok := mirrorTopic(h.topics, pk.TopicName)
	if !ok || !pk.FixedHeader.Retain && !h.subscribed(topic) {
		return
	}
	payload, ok := mirrorPayload(m, pk.Payload)
	if !ok {
		return
	}
	if err := h.publish(topic, payload, pk.FixedHeader.Retain); err != nil {
		h.log.Debug("json mirror", "topic", topic, "err", err) // the broker is closing
	}
}

// mirrorTopic returns the topic of the JSON copy of a message on topic,
// and a message of the kind the topic carries; ok is false for topics that
// are not mirrored.
func mirrorTopic(topics proto.Topics, topic string) (string, proto.Message, bool) {
	r, err := topics.Parse(topic)
	if err != nil {
		return "", nil, false
	}
	var m proto.Message
	switch r.Kind {
	case proto.TopicStatus:
		m = new(proto.NodeStatus)
	case proto.TopicPresence:
		m = new(proto.Presence)
	case proto.TopicEvents:
		m = new(proto.Event)
	case proto.TopicRollout:
		m = new(proto.RolloutState)
	default:
		return "", nil, false
	}
	return topics.JSON(topic), m, true
}

// mirrorPayload decodes payload into m and returns it as JSON (empty for
// a cleared retained message); ok is false if it does not decode.
func mirrorPayload(m proto.Message, payload []byte) ([]byte, bool) {
	if len(payload) == 0 {
		return nil, true
	}
	if err := proto.Decode(payload, m); err != nil {
		return nil, false
	}
	b, err := json.Marshal(m)
	return b, err == nil
}

// subscribed reports whether a message on topic would reach anyone.
func (s *Server) subscribed(topic string) bool {
	subs := s.mochi.Topics.Subscribers(topic)
	return len(subs.Subscriptions) > 0 || len(subs.Shared) > 0 || len(subs.InlineSubscriptions) > 0
}

// publishCopy publishes a mirror copy. Unlike Publish it has no size
// limit: the JSON copy of a rollout state near broker.max_packet_size is
// larger than the original (a client whose own Maximum Packet Size is
// smaller does not get it).
func (s *Server) publishCopy(topic string, payload []byte, retain bool) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	return s.mochi.Publish(topic, payload, retain, 1)
}

// clearMirror clears every retained message under <prefix>/json/: a broker
// started with the mirror off must not keep serving stale copies. It runs
// in Start, before clients are admitted to Publish (s.mu is held).
func (s *Server) clearMirror() {
	topics, _ := proto.NewTopics(s.cfg.Prefix) // validated by Config
	prefix := topics.JSON(topics.Prefix()) + "/"
	n := 0
	for topic := range s.mochi.Topics.Retained.GetAll() {
		if strings.HasPrefix(topic, prefix) && s.mochi.Publish(topic, nil, true, 1) == nil {
			n++
		}
	}
	if n > 0 {
		s.log.Info("json mirror off: cleared its retained copies", "topics", n)
	}
}
