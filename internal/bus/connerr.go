package bus

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
)

// Kind says what went wrong in a connection attempt, and so whether
// trying again can help.
type Kind int

const (
	// KindOther is anything else (a timeout, a reset link): worth retrying.
	KindOther Kind = iota
	// KindRefused: the host answered that nothing listens on the port.
	KindRefused
	// KindClosed: the server closed the connection before it answered
	// the CONNECT (a TLS listener spoken to in plain MQTT, a proxy, a
	// broker shutting down).
	KindClosed
	// KindUnknownHost: the host name does not resolve.
	KindUnknownHost
	// KindTLS: the TLS handshake failed (an untrusted or mismatched
	// broker certificate, a client certificate the broker refused, a
	// port that does not speak TLS).
	KindTLS
	// KindCredentials: CONNACK 0x86 bad user name or password, 0x8C bad
	// authentication method.
	KindCredentials
	// KindNotAuthorized: CONNACK 0x87 not authorized, 0x8A banned.
	KindNotAuthorized
	// KindClientID: CONNACK 0x85 client identifier not valid.
	KindClientID
	// KindUnavailable: CONNACK 0x88 server unavailable, 0x89 server busy,
	// 0x97 quota exceeded, 0x9F connection rate exceeded: the broker may
	// accept later.
	KindUnavailable
	// KindProtocol: the broker does not speak this client's MQTT (CONNACK
	// 0x80–0x84, 0x95, 0x9C use another server, 0x9D server moved).
	KindProtocol
)

// ConnectError is one failed connection attempt to URL, classified. Its
// message says in words what happened; Code is the broker's CONNACK
// reason code when the broker refused the CONNECT (0 otherwise).
type ConnectError struct {
	URL    string
	Kind   Kind
	Code   byte   // CONNACK reason code, 0 when the refusal came before MQTT
	Reason string // the broker's reason string, if it sent one
	Err    error  // what the network, TLS or paho said
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("%s: %s", e.URL, e.Words())
}

func (e *ConnectError) Unwrap() error { return e.Err }

// Words says what happened, without the URL.
func (e *ConnectError) Words() string {
	if e.Code != 0 {
		s := fmt.Sprintf("the broker refused the connection: %s (MQTT reason 0x%02X)", connackWords(e.Code), e.Code)
		if e.Reason != "" && squash(e.Reason) != squash(connackWords(e.Code)) {
			s += ": " + e.Reason
		}
		return s
	}
	switch e.Kind {
	case KindRefused:
		return "connection refused: nothing listens on that port (is the broker running, and is this its address?)"
	case KindClosed:
		if u, err := url.Parse(e.URL); err == nil && isTLSScheme(u.Scheme) {
			return "the server closed the connection in the TLS handshake or before answering the MQTT CONNECT (a plain MQTT listener? then use mqtt://)"
		}
		return "the server closed the connection before answering the MQTT CONNECT (a TLS listener spoken to as mqtt://, or not an MQTT broker?)"
	case KindUnknownHost:
		var dns *net.DNSError
		if errors.As(e.Err, &dns) && !dns.IsNotFound {
			return fmt.Sprintf("cannot look up host %q: %v", dns.Name, dns.Err)
		}
		if errors.As(e.Err, &dns) {
			return fmt.Sprintf("unknown host %q: the name does not resolve", dns.Name)
		}
		return "unknown host: the name does not resolve"
	case KindTLS:
		return "TLS handshake failed: " + tlsWords(e.Err)
	}
	return e.Err.Error()
}

// Final reports whether retrying cannot help at once: the broker or the
// network gave an answer that stays the same until someone changes a
// configuration. Refused and closed connections and an unavailable
// broker are not final on their own (a broker may be starting): see
// Graced.
func (e *ConnectError) Final() bool {
	switch e.Kind {
	case KindUnknownHost, KindTLS, KindCredentials, KindNotAuthorized, KindClientID, KindProtocol:
		return true
	}
	return false
}

// Graced reports whether the failure becomes final once it has lasted a
// short grace (a broker that is starting refuses for a moment).
func (e *ConnectError) Graced() bool {
	switch e.Kind {
	case KindRefused, KindClosed, KindUnavailable:
		return true
	}
	return false
}

// squash is s in lower case without spaces: "bad username or password"
// says what "bad user name or password" says.
func squash(s string) string {
	return strings.ToLower(strings.ReplaceAll(s, " ", ""))
}

func isTLSScheme(s string) bool {
	switch s {
	case "tls", "ssl", "mqtts", "wss":
		return true
	}
	return false
}

// connectGrace is how long refused, closed or unavailable connections
// are retried before a fail-fast client gives up.
const connectGrace = 3 * time.Second

// classify turns what autopaho reported for one attempt on url into a
// ConnectError.
func classify(url string, err error) *ConnectError {
	var ce *ConnectError
	if errors.As(err, &ce) {
		return ce
	}
	e := &ConnectError{URL: url, Err: err}
	var ca *autopaho.ConnackError
	if errors.As(err, &ca) {
		e.Code, e.Reason = ca.ReasonCode, ca.Reason
		e.Kind = connackKind(ca.ReasonCode)
		return e
	}
	var dns *net.DNSError
	var rh tls.RecordHeaderError
	var verify *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &dns) && !dns.IsTimeout:
		e.Kind = KindUnknownHost // or no resolver answers: as final for a person waiting
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Kind = KindRefused
	case errors.As(err, &rh), remoteAlert(err) != "", errors.As(err, &verify),
		errors.As(err, &unknownCA), errors.As(err, &host), errors.As(err, &invalid):
		e.Kind = KindTLS
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		e.Kind = KindClosed
	}
	return e
}

func connackKind(code byte) Kind {
	switch code {
	case 0x86, 0x8C:
		return KindCredentials
	case 0x87, 0x8A:
		return KindNotAuthorized
	case 0x85:
		return KindClientID
	case 0x88, 0x89, 0x97, 0x9F:
		return KindUnavailable
	}
	return KindProtocol
}

// connackWords are MQTT v5's CONNACK reason codes (§3.2.2.2) in words.
func connackWords(code byte) string {
	switch code {
	case 0x80:
		return "unspecified error"
	case 0x81:
		return "malformed packet"
	case 0x82:
		return "protocol error"
	case 0x83:
		return "implementation specific error"
	case 0x84:
		return "unsupported protocol version (the broker does not speak MQTT v5)"
	case 0x85:
		return "client identifier not valid"
	case 0x86:
		return "bad user name or password"
	case 0x87:
		return "not authorized"
	case 0x88:
		return "server unavailable"
	case 0x89:
		return "server busy"
	case 0x8A:
		return "banned"
	case 0x8C:
		return "bad authentication method"
	case 0x95:
		return "packet too large"
	case 0x97:
		return "quota exceeded"
	case 0x99:
		return "payload format invalid"
	case 0x9A:
		return "retain not supported"
	case 0x9B:
		return "QoS not supported"
	case 0x9C:
		return "use another server"
	case 0x9D:
		return "server moved"
	case 0x9F:
		return "connection rate exceeded"
	}
	return "refused"
}

// tlsWords says which side of the handshake failed and why.
func tlsWords(err error) string {
	var rh tls.RecordHeaderError
	var unknownCA x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &rh):
		return "the port does not speak TLS (a plain MQTT listener? use mqtt://)"
	case errors.As(err, &host):
		return fmt.Sprintf("the broker's certificate is not valid for this host name: %v", host.Error())
	case errors.As(err, &unknownCA):
		return "the broker's certificate is signed by an authority this client does not trust (x509: certificate signed by unknown authority)"
	case errors.As(err, &invalid):
		return fmt.Sprintf("the broker's certificate is not valid: %v", invalid.Error())
	case remoteAlert(err) != "":
		return fmt.Sprintf("the broker refused this client's certificate (remote error: %s)", remoteAlert(err))
	}
	return err.Error()
}

// remoteAlert is the TLS alert the other side sent ("tls: unknown
// certificate authority"), or "". crypto/tls reports it as a net.OpError
// with Op "remote error" (its alert type is unexported; AlertError is for
// QUIC only). With TLS 1.3 the client's handshake ends before the server
// checked the client certificate, so the alert comes on the first read:
// while waiting for the CONNACK.
func remoteAlert(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" && op.Err != nil {
		return op.Err.Error()
	}
	return ""
}
