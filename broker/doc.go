// Package broker owns lab's embedded MQTT v5 broker: a mochi-mqtt server with
// its TCP listener, the persistence of retained messages, sessions,
// subscriptions and inflight messages across restarts (a bolt file,
// broker.db, in Config.DataDir), the limits that bound each connection's
// memory and packet size, and an inline client through which code running in
// the same process (the controller service) publishes and subscribes without
// a network connection or a per-client queue (DESIGN §8, fan-in):
// Publish and Subscribe, and PublishMessage and SubscribeMessages with the
// MQTT v5 properties of the controller's request/response API (Response
// Topic, Correlation Data, and the requester's authenticated username).
// cmd/labctl wires the service to it; this package does not import the
// controller.
//
// The JSON mirror (mirror.go) copies node status, presence, events and
// rollout state as JSON under <prefix>/json/ for generic MQTT clients.
//
// The broker is a convenience, not a dependency: lab's nodes and controller
// speak plain MQTT v5 and run unchanged against an external broker. Nothing
// here may be needed for correctness on the data path.
//
// Decisions that differ from mochi's defaults (see capabilities in config.go):
//   - Retained messages and queued QoS 1 messages never expire unless the
//     publisher set a Message Expiry Interval (mochi deletes them after 24 h).
//   - QoS 2 is not offered (MaximumQos 1): lab uses QoS 1 everywhere.
//   - Small per-client queues and buffers (ClientQueue, ClientBufSize), and a
//     maximum packet size that is enforced and advertised in CONNACK.
//   - mochi's own log lines are passed on at WARN and above only, unless the
//     logger is enabled for DEBUG.
//
// The store (store.go) is lab's own hook on mochi's record format: writes
// are group-committed, one bbolt transaction for everything that changed
// while the previous one was committing (mochi's bolt hook made one
// transaction, with its fsync, per retained or QoS 1 message). A broker
// killed mid-commit loses the last few milliseconds of changes
// (docs/protocol.md says what that can cost). One broker per DataDir: the
// file is locked, and a second New fails with ErrDataDirInUse naming the
// process holding it (storelock.go). Known limits kept from mochi
// (v2.7.9):
//
//   - a restored session forgets the expiry its client asked for and is
//     kept for Config.SessionExpiry after the restart;
//
//   - a retained message restored from the store no longer honours its
//     publisher's Message Expiry Interval (the expiry time is not stored);
//
//   - a subscriber that stops reading (a laptop suspended mid-connection)
//     blocks every QoS 1 delivery to it until its keepalive runs out (1.5 ×
//     its keepalive): mochi takes the client's lock to number a message,
//     and its writer holds that lock while blocked on the socket.
//
//   - past a client's Receive Maximum, mochi holds messages back and
//     releases one each time that client sends a packet: a message held
//     just after the client acknowledged everything waits for its next
//     packet (a keepalive ping at worst). lab's clients keep the default
//     Receive Maximum (65,535), so only a client 65,535 messages behind
//     gets there.
//
// Bursts larger than a client's queue wait for it instead of being dropped,
// what is dropped for a stuck client is logged, and the send quota mochi
// lost on each held message is given back (pace.go).
//
// The TCP, TLS and WebSocket listeners are lab's own (listener.go,
// wslistener.go): broker/guard admits or closes each connection at accept,
// bounds the time to a completed TLS handshake (and WebSocket upgrade) and
// CONNECT, and slows down and bans repeated failed logins (with the access
// hook); Config.Guard sets its limits.
//
// Hooks are installed in one place, (*Server).addHooks, in order: the
// guard hook (a login gives its connection's pending slot back), the pace
// hook (which asks the ACL hook before it paces a delivery), the ACL hook
// (broker/access with an identities file, mochi's allow-all hook without
// one), the JSON mirror, the limits hook and the store.
//
// There is no main loop of our own: mochi runs one goroutine per connection
// plus its housekeeping loop; Start and Close bracket them.
package broker
