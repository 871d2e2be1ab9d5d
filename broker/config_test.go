package broker

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

func TestValidateDefaults(t *testing.T) {
	var c Config
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:1883" || c.MaxPacketSize != DefaultMaxPacketSize || DefaultMaxPacketSize < proto.MaxPayload || c.ClientQueue != 1024 ||
		c.ClientBufSize != 2048 || c.SessionExpiry != 7*24*time.Hour || c.Logger == nil || c.DataDir != "" {
		t.Fatalf("defaults: %+v", c)
	}
	for _, listen := range []string{":1883", "0.0.0.0:0", "[::1]:8883", "localhost:1883"} {
		c := Config{Listen: listen}
		if err := c.Validate(); err != nil {
			t.Errorf("Listen %q: %v", listen, err)
		}
	}
}

func TestValidateErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		key string
	}{
		{Config{Listen: "1883"}, "broker.listen"},
		{Config{Listen: "host:port"}, "broker.listen"},
		{Config{Listen: "host:70000"}, "broker.listen"},
		{Config{MaxPacketSize: 10}, "broker.max_packet_size"},
		{Config{MaxPacketSize: 1 << 30}, "broker.max_packet_size"},
		{Config{ClientQueue: -1}, "broker.client_queue"},
		{Config{ClientQueue: 1 << 30}, "broker.client_queue"},
		{Config{ClientBufSize: 16}, "broker.client_buf_size"},
		{Config{SessionExpiry: -time.Second}, "broker.session_expiry"},
		{Config{SessionExpiry: time.Millisecond}, "broker.session_expiry"},
		{Config{SessionExpiry: 200 * 365 * 24 * time.Hour}, "broker.session_expiry"},
	} {
		c := tc.cfg
		err := c.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.HasPrefix(err.Error(), tc.key+": ") {
			t.Errorf("%+v: got %v, want an ErrInvalidConfig naming %s", tc.cfg, err, tc.key)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Config{Listen: "nope", ClientQueue: -5}
	err := c.Validate()
	for _, key := range []string{"broker.listen", "broker.client_queue"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("error %v does not name %s", err, key)
		}
	}
}
