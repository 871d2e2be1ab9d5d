// Package pki creates what TLS between the broker and the machines needs:
// a certificate authority, a broker certificate for its host names, and
// client certificates whose common name is the identity (labd's node
// name, or a controller's user name). ECDSA P-256, PEM files.
package pki
