package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
)

// busConfig is the connection labd holds, from a validated cfg: its
// identity, credentials and session. The password file is read before
// every attempt: one fixed while labd is refused is used at the next.
func busConfig(cfg Config, log *slog.Logger) (bus.Config, error) {
	var password func() ([]byte, error)
	if cfg.PasswordFile != "" {
		password = func() ([]byte, error) {
			b, err := os.ReadFile(cfg.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("password_file: %w", err)
			}
			return []byte(strings.TrimSpace(string(b))), nil
		}
		if _, err := password(); err != nil {
			return bus.Config{}, err
		}
	}
	return bus.Config{
		URLs: cfg.Broker, ClientID: cfg.Name, Username: cfg.Username, PasswordFunc: password, TLS: cfg.TLS,
		CleanStart: false, SessionExpiry: cfg.SessionExpiry, KeepAlive: cfg.KeepAlive,
		Logger: log, Dial: cfg.Dial, ConnectHint: connectHint,
		TakeoverHint: fmt.Sprintf("is a second labd running with name %s? every machine needs a name of its own", cfg.Name),
	}, nil
}

// CheckConnect connects to the broker as labd would (its client id,
// credentials, certificates and session) and disconnects: nil when the
// broker accepted it, else an error in words naming the config key to
// check. It waits at most wait for a broker that answers slowly. It
// takes the node's session over for a moment, as a second labd would: a
// running labd reconnects within seconds (labd --check-connect).
func CheckConnect(ctx context.Context, cfg Config, wait time.Duration) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	bc, err := busConfig(cfg, cfg.Logger)
	if err != nil {
		return err
	}
	bc.FailFast = true
	c, err := bus.Dial(ctx, bc)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(sctx)
	}()
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := c.AwaitConnection(wctx); err != nil {
		var ce *bus.ConnectError
		if errors.As(err, &ce) {
			if hint := connectHint(ce); hint != "" {
				return fmt.Errorf("cannot connect as node %s: %w; %s", cfg.Name, ce, hint)
			}
			return fmt.Errorf("cannot connect as node %s: %w", cfg.Name, ce)
		}
		return fmt.Errorf("cannot connect as node %s: %w", cfg.Name, err)
	}
	return nil
}

// connectHint names the labd config key to check for a failed connection
// attempt (docs/labd.md); the bus logs it beside the failure in words.
func connectHint(ce *bus.ConnectError) string {
	tlsURL := strings.HasPrefix(ce.URL, "tls://") || strings.HasPrefix(ce.URL, "ssl://") ||
		strings.HasPrefix(ce.URL, "mqtts://") || strings.HasPrefix(ce.URL, "wss://")
	words := ce.Words()
	switch ce.Kind {
	case bus.KindRefused:
		return "check broker: is the broker running at that address?"
	case bus.KindClosed:
		if tlsURL {
			return "check broker: a plain MQTT listener needs mqtt://"
		}
		return "check broker: a TLS listener needs tls:// (and tls.ca)"
	case bus.KindUnknownHost:
		return "check the host name in broker"
	case bus.KindTLS:
		switch {
		case strings.Contains(words, "does not speak TLS"):
			return "check broker: that port speaks plain MQTT, use mqtt://"
		case strings.Contains(words, "not valid for this host name"):
			return "check broker: use a host name the broker's certificate was issued for"
		case strings.Contains(words, "refused this client's certificate"):
			return "check tls.cert and tls.key: a certificate the broker's CA issued for this node (labctl node add NAME --pki DIR)"
		}
		return "check tls.ca: the CA that signed the broker's certificate"
	case bus.KindCredentials:
		return "check password_file (and username, default the node's name): the password labctl node add wrote for this node"
	case bus.KindNotAuthorized:
		if strings.Contains(words, "banned") {
			return "too many failed logins from this address: the broker refuses this username from here for a while (broker.login_ban_duration; a broker reload lifts it): fix password_file first"
		}
		return "the broker does not let this identity in: check username, password_file or tls.cert, and the broker's identities file"
	case bus.KindClientID:
		return "check name and username: a node's client id is its name, and the broker takes it only from the identity of that name (username defaults to the name)"
	case bus.KindProtocol:
		return "check broker: labd needs an MQTT v5 broker"
	}
	return ""
}
