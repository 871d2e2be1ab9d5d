// Package bus is lab's MQTT v5 client: one connection that keeps itself up
// (autopaho, exponential backoff with jitter), remembers its subscriptions
// and re-sends them on every connect, and publishes QoS 1 msgpack payloads.
// A connection whose session another client with the same id took over
// (MQTT reason 0x8E), or that the broker closed right after it opened, is
// logged as such and retried after a growing wait (from 1 s) instead of at
// once.
//
// It is shared by the node daemon and the controller. It uses plain MQTT v5
// only — nothing broker-specific — so both run unchanged against the embedded
// broker or an external one (mosquitto, EMQX, VerneMQ, HiveMQ).
//
// Requests and responses (the controller service's API) use MQTT v5's
// Response Topic and Correlation Data (Message, PublishMessage); a
// broker's refusal of a publish is an error that wraps ErrNotAuthorized
// (reason 0x87), and a broker that says nobody subscribes wraps
// ErrNoSubscribers (0x10).
//
// Received messages are handed to Config.OnMessage on the client's own
// goroutine, in order; a consumer that has work to do hands them off to its
// own loop.
package bus
