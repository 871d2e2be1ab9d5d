package broker

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"
)

// StoreFile is the name of the bolt file inside Config.DataDir.
const StoreFile = "broker.db"

// storeLockTimeout bounds the wait for the file lock: a second broker on the
// same DataDir fails instead of hanging.
const storeLockTimeout = time.Second

// storeBucket is the bbolt bucket of every record: the name and the keys
// ("CL_<client>", "SUB_<client>:<filter>", "RET_<topic>",
// "IFM_<client>:<packet id>") and JSON records are those of mochi's own bolt
// hook, so a broker.db written by an older lab (which used that hook) loads
// unchanged.
const storeBucket = "mochi"

// storeMaxPending bounds the writes waiting for a commit (see batchWriter).
const storeMaxPending = 1 << 16

// storeHook persists retained messages, sessions, subscriptions and
// inflight messages in a bbolt file. It replaces mochi's bolt hook, whose
// records it keeps, for these reasons:
//   - writes are group-committed (batchWriter): mochi's hook made one bbolt
//     transaction per retained or QoS 1 message, which made a 2,000-node
//     rollout three times slower than without persistence;
//   - the inline client's subscriptions are not stored: they are Go
//     callbacks that cannot survive a restart, and mochi would restore them
//     as a network subscription of a client that never drains its queue;
//   - $SYS counters are not stored: lab does not use $SYS (DESIGN §4);
//   - inflight messages keep their packet id in the record (mochi's hook
//     kept it only in the key, and a restored message with id 0 made every
//     reconnect of its client fail with "missing packet id"); records
//     written that way get it back from the key on load.
//
// A write is committed a few milliseconds after the event that caused it,
// not before mochi acknowledges the packet: a broker killed in between
// loses that window, as mosquitto loses what changed since its last
// autosave. Nodes republish their status and presence on reconnect; a
// Desired or gate lost that way leaves its rollout not started on that
// node, never anything wrong applied (docs/protocol.md).
type storeHook struct {
	mqtt.HookBase
	db *bbolt.DB
	w  *batchWriter
}

// storeConfig is the store's Init configuration.
type storeConfig struct {
	Path string
}

func newStoreHook() *storeHook { return new(storeHook) }

// storeOptions returns the store's configuration for dataDir, creating it.
func storeOptions(dataDir string) (*storeConfig, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dataDir, err)
	}
	return &storeConfig{Path: filepath.Join(dataDir, StoreFile)}, nil
}

func (h *storeHook) ID() string { return "lab-store" }

func (h *storeHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnSessionEstablished,
		mqtt.OnDisconnect,
		mqtt.OnSubscribed,
		mqtt.OnUnsubscribed,
		mqtt.OnRetainMessage,
		mqtt.OnWillSent,
		mqtt.OnQosPublish,
		mqtt.OnQosComplete,
		mqtt.OnQosDropped,
		mqtt.OnClientExpired,
		mqtt.OnRetainedExpired,
		mqtt.StoredClients,
		mqtt.StoredInflightMessages,
		mqtt.StoredRetainedMessages,
		mqtt.StoredSubscriptions,
	}, []byte{b})
}

// Init opens the bolt file and starts the writer.
func (h *storeHook) Init(config any) error {
	cfg, ok := config.(*storeConfig)
	if !ok || cfg == nil || cfg.Path == "" {
		return mqtt.ErrInvalidConfigType
	}
	db, err := bbolt.Open(cfg.Path, 0o600, &bbolt.Options{Timeout: storeLockTimeout})
	if errors.Is(err, bberrors.ErrTimeout) {
		return dataDirInUse(filepath.Dir(cfg.Path), cfg.Path)
	}
	if err != nil {
		return err
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte(storeBucket))
		return err
	}); err != nil {
		db.Close()
		return err
	}
	h.db = db
	h.w = newBatchWriter(db, storeBucket, storeMaxPending, h.Log)
	return nil
}

// Stop commits what is pending and closes the file.
func (h *storeHook) Stop() error {
	if h.db == nil {
		return nil
	}
	h.w.close()
	err := h.db.Close()
	h.db = nil
	return err
}

// set encodes v and hands it to the writer.
func (h *storeHook) set(key string, v storage.Serializable) {
	data, err := v.MarshalBinary()
	if err == nil {
		err = h.w.put(key, data)
	}
	if err != nil {
		h.Log.Error("store: write refused", "key", key, "err", err)
	}
}

func (h *storeHook) del(key string) {
	if err := h.w.del(key); err != nil {
		h.Log.Error("store: delete refused", "key", key, "err", err)
	}
}

func clientKey(id string) string { return storage.ClientKey + "_" + id }

func subscriptionKey(id, filter string) string {
	return storage.SubscriptionKey + "_" + id + ":" + filter
}

func retainedKey(topic string) string { return storage.RetainedKey + "_" + topic }

func inflightKey(id string, pk packets.Packet) string {
	return storage.InflightKey + "_" + id + ":" + pk.FormatID()
}

// durable reports whether cl's session outlives its connection (MQTT v5
// session expiry > 0, or a v3 client without clean session): only such a
// session has anything to restore after a restart. labctl, dashboards and
// other watchers connect with clean, expiring sessions; storing their
// subscriptions and the messages in flight to them cost the broker most
// of its store writes (two for every status a watcher of the fleet
// received) for nothing.
func durable(cl *mqtt.Client) bool {
	if cl.Net.Inline {
		return false
	}
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

func (h *storeHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if !durable(cl) {
		if !cl.Net.Inline {
			h.del(clientKey(cl.ID)) // a durable session of the same id ended
		}
		return
	}
	h.storeClient(cl)
}

func (h *storeHook) OnWillSent(cl *mqtt.Client, _ packets.Packet) {
	if durable(cl) {
		h.storeClient(cl)
	}
}

// storeClient writes a network client's session record.
func (h *storeHook) storeClient(cl *mqtt.Client) {
	props := cl.Properties.Props.Copy(false)
	h.set(clientKey(cl.ID), &storage.Client{
		ID:              cl.ID,
		T:               storage.ClientKey,
		Remote:          cl.Net.Remote,
		Listener:        cl.Net.Listener,
		Username:        cl.Properties.Username,
		Clean:           cl.Properties.Clean,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval: props.SessionExpiryInterval,
			AuthenticationMethod:  props.AuthenticationMethod,
			AuthenticationData:    props.AuthenticationData,
			RequestProblemInfo:    props.RequestProblemInfo,
			RequestResponseInfo:   props.RequestResponseInfo,
			ReceiveMaximum:        props.ReceiveMaximum,
			TopicAliasMaximum:     props.TopicAliasMaximum,
			User:                  props.User,
			MaximumPacketSize:     props.MaximumPacketSize,
		},
		Will: storage.ClientWill(cl.Properties.Will),
	})
}

// OnDisconnect removes the session of a client whose session ends with the
// connection (not one taken over by a new connection of the same client).
func (h *storeHook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if !expire || !durable(cl) || cl.StopCause() == packets.ErrSessionTakenOver {
		return
	}
	h.forget(cl)
}

func (h *storeHook) OnClientExpired(cl *mqtt.Client) { h.forget(cl) }

// forget deletes a session with its subscriptions and inflight messages:
// mochi (v2.7.9) removes those two itself only for a session that ends with
// its connection, not for one that expires later, and its hook left them in
// the store to be restored on every start.
func (h *storeHook) forget(cl *mqtt.Client) {
	h.del(clientKey(cl.ID))
	for filter := range cl.State.Subscriptions.GetAll() {
		h.del(subscriptionKey(cl.ID, filter))
	}
	for _, pk := range cl.State.Inflight.GetAll(false) {
		h.del(inflightKey(cl.ID, pk))
	}
}

// OnSubscribed stores network clients' subscriptions only.
func (h *storeHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if !durable(cl) {
		return
	}
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] >= packets.ErrUnspecifiedError.Code {
			continue // refused: nothing to restore
		}
		key := subscriptionKey(cl.ID, f.Filter)
		h.set(key, &storage.Subscription{
			ID:                key,
			T:                 storage.SubscriptionKey,
			Client:            cl.ID,
			Qos:               codes[i],
			Filter:            f.Filter,
			Identifier:        f.Identifier,
			NoLocal:           f.NoLocal,
			RetainHandling:    f.RetainHandling,
			RetainAsPublished: f.RetainAsPublished,
		})
	}
}

func (h *storeHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if !durable(cl) {
		return
	}
	for _, f := range pk.Filters {
		h.del(subscriptionKey(cl.ID, f.Filter))
	}
}

// OnRetainMessage stores (r ≥ 0) or clears (r == -1) a topic's retained message.
func (h *storeHook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	key := retainedKey(pk.TopicName)
	if r == -1 {
		h.del(key)
		return
	}
	m := message(key, storage.RetainedKey, cl, pk)
	h.set(key, &m)
}

func (h *storeHook) OnRetainedExpired(topic string) { h.del(retainedKey(topic)) }

// OnQosPublish stores a QoS 1 message in flight to cl.
func (h *storeHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, _ int) {
	if !durable(cl) {
		return
	}
	key := inflightKey(cl.ID, pk)
	m := message(key, storage.InflightKey, cl, pk)
	m.Sent, m.PacketID = sent, pk.PacketID
	h.set(key, &m)
}

func (h *storeHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if durable(cl) {
		h.del(inflightKey(cl.ID, pk))
	}
}

func (h *storeHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) { h.OnQosComplete(cl, pk) }

// message is the stored form of pk.
func message(key, kind string, cl *mqtt.Client, pk packets.Packet) storage.Message {
	props := pk.Properties.Copy(false)
	return storage.Message{
		ID:          key,
		T:           kind,
		FixedHeader: pk.FixedHeader,
		TopicName:   pk.TopicName,
		Payload:     pk.Payload,
		Created:     pk.Created,
		Client:      cl.ID,
		Origin:      pk.Origin,
		Properties: storage.MessageProperties{
			PayloadFormat:          props.PayloadFormat,
			MessageExpiryInterval:  props.MessageExpiryInterval,
			ContentType:            props.ContentType,
			ResponseTopic:          props.ResponseTopic,
			CorrelationData:        props.CorrelationData,
			SubscriptionIdentifier: props.SubscriptionIdentifier,
			TopicAlias:             props.TopicAlias,
			User:                   props.User,
		},
	}
}

// loadAll decodes every record under prefix into a T and keeps those that
// keep accepts (nil: all). A record that does not decode, or that keep
// refuses with an error other than errSkip, is logged and skipped: one bad
// record must not keep the broker from starting.
func loadAll[T any, PT interface {
	*T
	UnmarshalBinary([]byte) error
}](h *storeHook, prefix string, keep func(*T) error) ([]T, error) {
	if h.db == nil {
		return nil, storage.ErrDBFileNotOpen
	}
	var v []T
	err := h.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket([]byte(storeBucket)).Cursor()
		p := []byte(prefix + "_")
		for k, b := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, b = c.Next() {
			var r T
			err := PT(&r).UnmarshalBinary(b)
			if err == nil && keep != nil {
				err = keep(&r)
			}
			switch {
			case err == nil:
				v = append(v, r)
			case !errors.Is(err, errSkip):
				h.Log.Warn("store: skipped a record that does not decode", "key", string(k), "err", err)
			}
		}
		return nil
	})
	return v, err
}

// errSkip leaves a record out without a warning.
var errSkip = errors.New("skipped")

func (h *storeHook) StoredClients() ([]storage.Client, error) {
	return loadAll[storage.Client](h, storage.ClientKey, nil)
}

// StoredSubscriptions returns the subscriptions of stored sessions only:
// a subscription left behind by a session that ended (written before
// forget existed) would otherwise be restored into the topic tree for a
// client that does not exist.
func (h *storeHook) StoredSubscriptions() ([]storage.Subscription, error) {
	stored, err := h.StoredClients()
	if err != nil {
		return nil, err
	}
	clients := map[string]bool{}
	for _, c := range stored {
		clients[c.ID] = true
	}
	return loadAll[storage.Subscription](h, storage.SubscriptionKey, func(s *storage.Subscription) error {
		if !clients[s.Client] {
			return errSkip
		}
		return nil
	})
}

func (h *storeHook) StoredRetainedMessages() ([]storage.Message, error) {
	return loadAll[storage.Message](h, storage.RetainedKey, nil)
}

// StoredInflightMessages restores each message's packet id from its key,
// "IFM_<client>:<packet id>", where the record lacks it, and drops a
// message without one.
func (h *storeHook) StoredInflightMessages() ([]storage.Message, error) {
	return loadAll[storage.Message](h, storage.InflightKey, func(m *storage.Message) error {
		if m.PacketID == 0 {
			m.PacketID = packetIDFromKey(m.ID)
		}
		if m.PacketID == 0 {
			return errors.New("no packet id")
		}
		return nil
	})
}

// packetIDFromKey returns the packet id at the end of an inflight key, or 0.
func packetIDFromKey(key string) uint16 {
	i := strings.LastIndexByte(key, ':')
	if i < 0 {
		return 0
	}
	id, err := strconv.ParseUint(key[i+1:], 10, 16)
	if err != nil {
		return 0
	}
	return uint16(id)
}
