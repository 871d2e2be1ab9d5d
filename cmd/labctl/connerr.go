package main

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
)

// explainConnect turns the bus's error for a connection that did not come
// up into one line: what failed, for which URL and identity, and the
// likely fix in labctl's own flags. authenticated says whether the
// client gave a username or a certificate (identity is then its name;
// otherwise it is the random client id, and the client is anonymous).
func explainConnect(err error, urls []string, identity string, authenticated bool) error {
	who := fmt.Sprintf("as %q", identity)
	if !authenticated {
		who = "anonymously (no --username, no --tls-cert)"
	}
	var ce *bus.ConnectError
	if !errors.As(err, &ce) {
		// Still waiting when the time was up: a slow broker, or a link
		// that drops packets.
		return fmt.Errorf("cannot connect to %s %s within %s: %w; check the URL (--broker or LAB_BROKER) and that the broker is up",
			strings.Join(urls, ", "), who, connectWait, err)
	}
	msg := fmt.Sprintf("cannot connect to %s %s: %s", ce.URL, who, ce.Words())
	if fix := connectFix(ce, authenticated); fix != "" {
		msg += ". " + fix
	}
	if len(urls) > 1 {
		msg += fmt.Sprintf(" (all %d broker URLs failed: %v)", len(urls), err)
	}
	return connectError{msg: msg, err: err}
}

// connectFix is the likely fix for ce, in labctl's flags.
func connectFix(ce *bus.ConnectError, authenticated bool) string {
	tlsURL := false
	if u, err := url.Parse(ce.URL); err == nil {
		tlsURL = u.Scheme == "tls" || u.Scheme == "ssl" || u.Scheme == "mqtts" || u.Scheme == "wss"
	}
	words := ce.Words()
	switch ce.Kind {
	case bus.KindRefused:
		return "Start the broker (labctl broker), or name the right one with --broker URL or LAB_BROKER (default " + defaultBrokerURL + ")"
	case bus.KindClosed:
		if tlsURL {
			return "If that port is a plain MQTT listener, use mqtt://; otherwise check the broker's log"
		}
		return "If that port is the broker's TLS listener, use tls://HOST:PORT with --tls-ca FILE"
	case bus.KindUnknownHost:
		return "Check the host name in --broker or LAB_BROKER"
	case bus.KindTLS:
		switch {
		case strings.Contains(words, "does not speak TLS"):
			return "That port speaks plain MQTT: use mqtt://"
		case strings.Contains(words, "not valid for this host name"):
			return "Connect by a name or address the broker's certificate was issued for (labctl pki issue broker --dir DIR --host NAME)"
		case strings.Contains(words, "refused this client's certificate"):
			return "Give a client certificate the broker's CA issued: --tls-cert FILE --tls-key FILE (labctl node add NAME --pki DIR writes them)"
		default:
			return "Give the CA that signed the broker's certificate with --tls-ca FILE (labctl pki init wrote DIR/ca.crt)"
		}
	case bus.KindCredentials:
		if !authenticated {
			return "The broker wants a login: give --username NAME --password-file FILE (labctl node add NAME --role controller --identities FILE creates one), or a client certificate (--tls-cert, --tls-key)"
		}
		return "Check --username and --password-file (env LAB_USERNAME, LAB_PASSWORD_FILE): the broker's identities file must hold this name with this password (labctl node add NAME --identities FILE)"
	case bus.KindNotAuthorized:
		if !authenticated {
			return "The broker does not let anonymous clients in: give --username NAME --password-file FILE, or --tls-cert/--tls-key"
		}
		if strings.Contains(words, "banned") {
			return "Too many failed logins from this address: the broker refuses this username from here for broker.login_ban_duration (10 min by default); `systemctl reload lab-broker` (SIGHUP) lifts every ban at once"
		}
		return "This identity may not connect: check the broker's identities file and its log (\"login refused\" says why)"
	case bus.KindClientID:
		return "The broker refused the client id labctl chose (<username>-<random>): it belongs to another identity (a node's name, or another controller's name-…); log in as another username or rename the identity"
	case bus.KindUnavailable:
		return "The broker is overloaded or not ready: try again shortly"
	case bus.KindProtocol:
		return "lab needs an MQTT v5 broker (mosquitto ≥ 2.0, EMQX, HiveMQ, VerneMQ, labctl broker)"
	}
	return ""
}

// connectWait is how long labctl waits for a broker that answers slowly.
const connectWait = 15 * time.Second

// connectError is a connection failure explained.
type connectError struct {
	msg string
	err error
}

func (e connectError) Error() string { return e.msg }
func (e connectError) Unwrap() error { return e.err }
