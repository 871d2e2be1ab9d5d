package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/lab-fleet/lab/broker/guard"
	"github.com/lab-fleet/lab/internal/pki"
	"github.com/lab-fleet/lab/proto"
)

// Defaults applied by Config.Validate to zero values.
const (
	DefaultListen        = "127.0.0.1:1883"
	DefaultMaxPacketSize = proto.MaxPayload + 64<<10 // the largest lab payload (a rollout state) plus headers
	DefaultClientQueue   = 1024
	DefaultClientBufSize = 2048
	DefaultSessionExpiry = 7 * 24 * time.Hour
)

// Bounds checked by Config.Validate.
const (
	minPacketSize = 1 << 10
	maxPacketSize = 268435455 // MQTT's largest remaining length
	minBufSize    = 256
	maxBufSize    = 1 << 20
	maxQueue      = 1 << 20
)

// ErrInvalidConfig is wrapped by every error Config.Validate returns.
var ErrInvalidConfig = errors.New("invalid value")

// Config configures the embedded broker. The zero value, after Validate, is
// an in-memory broker on 127.0.0.1:1883.
type Config struct {
	Listen        string        // TCP listener address, default "127.0.0.1:1883" (":1883" allowed)
	DataDir       string        // persistence dir (bolt file broker.db inside); "" = in-memory
	MaxPacketSize uint32        // largest packet accepted, default DefaultMaxPacketSize (1.06 MiB)
	ClientQueue   int           // per-client outbound queue slots, default 1024
	ClientBufSize int           // per-client read and write buffer bytes, default 2048
	SessionExpiry time.Duration // longest session expiry granted, default 7 days
	// Identities is the identities file (broker/access): who may connect
	// and do what. "" lets every client do everything (a warning is
	// logged): only for a broker that listens on loopback for a demo.
	Identities string
	Prefix     string // topic prefix the access rules apply to, default lab/v1
	// NoJSONMirror turns off the JSON copies of status, presence, events
	// and rollout state under <prefix>/json/ (mirror.go); the copies
	// already retained are cleared at Start.
	NoJSONMirror bool
	// TLSListen and WSListen add a TLS listener and a WebSocket-over-TLS
	// listener ("" = none); both need TLSCert and TLSKey. With
	// TLSClientCA, clients may present a certificate signed by that CA
	// instead of a password: its common name is the identity.
	TLSListen   string
	WSListen    string
	TLSCert     string
	TLSKey      string
	TLSClientCA string
	// Guard limits connections before they log in (broker/guard): the
	// connect deadline, pending connections overall and per address,
	// connection rate per address, failed-login slow-down and bans. Zero
	// fields take guard's defaults. Every listener applies it.
	Guard  guard.Limits
	Logger *slog.Logger // nil = slog.Default(); mochi logs through it too
}

// guardKeys names the configuration key of each guard.Limits field that has
// one (MaxTracked is set only from Go; guardKey names it by its field).
var guardKeys = map[string]string{
	"ConnectTimeout":    "broker.connect_timeout",
	"MaxPending":        "broker.max_pending",
	"MaxPendingPerAddr": "broker.max_pending_per_address",
	"ConnectRate":       "broker.connect_rate",
	"ConnectBurst":      "broker.connect_burst",
	"SlowAfter":         "broker.login_slow_after",
	"BanAfter":          "broker.login_ban_after",
	"Window":            "broker.login_window",
	"BanDuration":       "broker.login_ban_duration",
}

func guardKey(field string) string {
	if k, ok := guardKeys[field]; ok {
		return k
	}
	return "broker.guard." + field
}

// Validate fills defaults and checks every field. Each error names the
// configuration key (e.g. "broker.listen: ...") and wraps ErrInvalidConfig;
// all problems are reported at once, joined.
func (c *Config) Validate() error {
	c.fillDefaults()
	var guardErrs []error
	for _, p := range c.Guard.Check() {
		guardErrs = append(guardErrs, check(guardKey(p.Field), p.Err))
	}
	return errors.Join(
		errors.Join(guardErrs...),
		check("broker.listen", validateListen(c.Listen)),
		check("broker.data_dir", validateDataDir(c.DataDir)),
		check("broker.max_packet_size", between(int64(c.MaxPacketSize), minPacketSize, maxPacketSize)),
		check("broker.client_queue", between(int64(c.ClientQueue), 1, maxQueue)),
		check("broker.client_buf_size", between(int64(c.ClientBufSize), minBufSize, maxBufSize)),
		check("broker.session_expiry", validateExpiry(c.SessionExpiry)),
		check("broker.identities", validateFile(c.Identities)),
		check("broker.prefix", validatePrefix(c.Prefix)),
		check("broker.tls_listen", validateOptionalListen(c.TLSListen)),
		check("broker.ws_listen", validateOptionalListen(c.WSListen)),
		check("broker.tls_cert", c.validateTLS()),
	)
}

func (c *Config) fillDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = DefaultMaxPacketSize
	}
	if c.ClientQueue == 0 {
		c.ClientQueue = DefaultClientQueue
	}
	if c.ClientBufSize == 0 {
		c.ClientBufSize = DefaultClientBufSize
	}
	if c.SessionExpiry == 0 {
		c.SessionExpiry = DefaultSessionExpiry
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Prefix == "" {
		c.Prefix = proto.DefaultPrefix
	}
	c.Guard.FillDefaults()
}

func check(key string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w: %w", key, ErrInvalidConfig, err)
}

func validateListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > math.MaxUint16 {
		return fmt.Errorf("port %q is not a number between 0 and 65535", port)
	}
	return nil
}

func validateDataDir(dir string) error {
	if dir == "" {
		return nil
	}
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil // created by New
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}

func validateOptionalListen(addr string) error {
	if addr == "" {
		return nil
	}
	return validateListen(addr)
}

func (c *Config) validateTLS() error {
	if c.TLSListen == "" && c.WSListen == "" {
		if c.TLSCert != "" || c.TLSKey != "" || c.TLSClientCA != "" {
			return errors.New("set broker.tls_listen or broker.ws_listen to use a certificate")
		}
		return nil
	}
	if c.TLSCert == "" || c.TLSKey == "" {
		return errors.New("a TLS listener needs broker.tls_cert and broker.tls_key")
	}
	_, err := pki.ServerConfig(c.TLSCert, c.TLSKey, c.TLSClientCA)
	return err
}

func validateFile(path string) error {
	if path == "" {
		return nil
	}
	_, err := os.Stat(path)
	return err
}

func validatePrefix(p string) error {
	_, err := proto.NewTopics(p)
	return err
}

func between(v, lo, hi int64) error {
	if v < lo || v > hi {
		return fmt.Errorf("%d is outside [%d, %d]", v, lo, hi)
	}
	return nil
}

func validateExpiry(d time.Duration) error {
	if d < time.Second || d > math.MaxUint32*time.Second {
		return fmt.Errorf("%s is outside [1s, %ds]", d, uint32(math.MaxUint32))
	}
	return nil
}

// capabilities derives mochi's capabilities from a validated Config.
func (c *Config) capabilities() *mqtt.Capabilities {
	caps := mqtt.NewDefaultServerCapabilities()
	// 0 disables mochi's forced expiry of retained and queued messages
	// (default 24 h); a publisher's own Message Expiry Interval still applies.
	// DESIGN §4: desired state is retained and must outlive a sleeping laptop.
	caps.MaximumMessageExpiryInterval = 0
	caps.MaximumClientWritesPending = int32(c.ClientQueue)
	// Messages a client's Receive Maximum does not let through yet wait
	// in its inflight store (a map: memory only while used). mochi's
	// default, 8,192, drops a controller's share of a 10,000-node status
	// burst; 65,535 is the packet-id space.
	caps.MaximumInflight = 65535
	caps.MaximumSessionExpiryInterval = uint32(c.SessionExpiry / time.Second)
	caps.MaximumPacketSize = c.MaxPacketSize
	caps.MaximumQos = 1 // lab uses QoS 1 only (DESIGN §4)
	return caps
}
