package broker

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
)

// StoreFile is the name of the bolt file inside Config.DataDir.
const StoreFile = "broker.db"

// storeLockTimeout bounds the wait for the file lock: a second broker on the
// same DataDir fails instead of hanging.
const storeLockTimeout = time.Second

// storeHook persists retained messages, sessions, subscriptions and
// inflight messages with mochi's bolt hook, with two changes:
//   - the inline client's subscriptions are not stored: they are Go
//     callbacks that cannot survive a restart, and mochi would restore them
//     as a network subscription of a client that never drains its queue.
//   - $SYS counters are not stored: mochi would write them every tick, and
//     lab does not use $SYS (DESIGN §4).
//   - inflight messages get their packet id back on load: mochi's bolt hook
//     (v2.7.9) stores it only in the key, and a restored message with id 0
//     makes every reconnect of its client fail with "missing packet id".
type storeHook struct {
	*bolt.Hook
}

func newStoreHook() *storeHook { return &storeHook{Hook: new(bolt.Hook)} }

// storeOptions returns the bolt hook's options for dataDir, creating it.
func storeOptions(dataDir string) (*bolt.Options, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dataDir, err)
	}
	return &bolt.Options{
		Path:    filepath.Join(dataDir, StoreFile),
		Options: &bbolt.Options{Timeout: storeLockTimeout},
	}, nil
}

// Provides is bolt's list without the $SYS events.
func (h *storeHook) Provides(b byte) bool {
	if b == mqtt.OnSysInfoTick || b == mqtt.StoredSysInfo {
		return false
	}
	return h.Hook.Provides(b)
}

// OnSubscribed stores network clients' subscriptions only.
func (h *storeHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if cl.Net.Inline {
		return
	}
	h.Hook.OnSubscribed(cl, pk, codes)
}

// OnUnsubscribed mirrors OnSubscribed.
func (h *storeHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	h.Hook.OnUnsubscribed(cl, pk)
}

// StoredInflightMessages restores each message's packet id from its key,
// "IFM_<client>:<packet id>", and drops a message without one.
func (h *storeHook) StoredInflightMessages() ([]storage.Message, error) {
	msgs, err := h.Hook.StoredInflightMessages()
	if err != nil {
		return nil, err
	}
	kept := msgs[:0]
	for _, m := range msgs {
		if m.PacketID == 0 {
			m.PacketID = packetIDFromKey(m.ID)
		}
		if m.PacketID == 0 {
			h.Log.Warn("dropped stored inflight message without packet id", "key", m.ID)
			continue
		}
		kept = append(kept, m)
	}
	return kept, nil
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
