package proto

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"time"
)

// Signatures (DESIGN §9): Desired and Secret are signed by the operator's
// key, Gate and Command by the controller's. The signature is ed25519 over sigDomain
// followed by the canonical encoding (Encode) of the message with an empty
// Sig. Keys are written like Nix's: "<key-id>:<base64>".

const sigDomain = "lab-sig-v1\x00"

// Signable is a message that carries a signature.
type Signable interface {
	Message
	sigFields() (keyID *string, sig *[]byte)
}

func (d *Desired) sigFields() (*string, *[]byte) { return &d.KeyID, &d.Sig }
func (g *Gate) sigFields() (*string, *[]byte)    { return &g.KeyID, &g.Sig }
func (c *Command) sigFields() (*string, *[]byte) { return &c.KeyID, &c.Sig }

func validKeyID(k string) error {
	if k == "" || len(k) > 64 {
		return fmt.Errorf("%w: key id must be 1..64 characters", ErrInvalidField)
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-", c)) {
			return fmt.Errorf("%w: key id %q: character %q not in [A-Za-z0-9._-]", ErrInvalidField, k, c)
		}
	}
	return nil
}

// signedBytes is what a signature covers.
func signedBytes(m Signable) ([]byte, error) {
	_, sig := m.sigFields()
	saved := *sig
	*sig = nil
	defer func() { *sig = saved }()
	b, err := Encode(m)
	if err != nil {
		return nil, err
	}
	return append([]byte(sigDomain), b...), nil
}

// PrivateKey is a named ed25519 signing key.
type PrivateKey struct {
	ID  string
	Key ed25519.PrivateKey
}

// PublicKey is a named ed25519 verification key.
type PublicKey struct {
	ID  string
	Key ed25519.PublicKey
}

// GenerateKey makes a new key pair named id.
func GenerateKey(id string) (PrivateKey, error) {
	if err := validKeyID(id); err != nil {
		return PrivateKey{}, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("generate key: %w", err)
	}
	return PrivateKey{ID: id, Key: priv}, nil
}

// Public returns the verification half.
func (k PrivateKey) Public() PublicKey {
	return PublicKey{ID: k.ID, Key: k.Key.Public().(ed25519.PublicKey)}
}

// String renders "<id>:<base64 of the 64-byte private key>".
func (k PrivateKey) String() string { return k.ID + ":" + base64.StdEncoding.EncodeToString(k.Key) }

// String renders "<id>:<base64 of the 32-byte public key>".
func (k PublicKey) String() string { return k.ID + ":" + base64.StdEncoding.EncodeToString(k.Key) }

func parseKey(s string, size int) (string, []byte, error) {
	id, b64, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return "", nil, fmt.Errorf("%w: key must be <id>:<base64>", ErrInvalidField)
	}
	if err := validKeyID(id); err != nil {
		return "", nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", nil, fmt.Errorf("%w: key %q: %v", ErrInvalidField, id, err)
	}
	if len(raw) != size {
		return "", nil, fmt.Errorf("%w: key %q is %d bytes, want %d", ErrInvalidField, id, len(raw), size)
	}
	return id, raw, nil
}

// ParsePrivateKey parses the String form of a PrivateKey.
func ParsePrivateKey(s string) (PrivateKey, error) {
	id, raw, err := parseKey(s, ed25519.PrivateKeySize)
	return PrivateKey{ID: id, Key: raw}, err
}

// ParsePublicKey parses the String form of a PublicKey.
func ParsePublicKey(s string) (PublicKey, error) {
	id, raw, err := parseKey(s, ed25519.PublicKeySize)
	return PublicKey{ID: id, Key: raw}, err
}

// Sign sets m's key id and signature. Seal m afterwards (Seal does not touch
// the signature); the signature covers the envelope, so fill it first.
func Sign(m Signable, k PrivateKey) error {
	kid, sig := m.sigFields()
	*kid = k.ID
	h := m.Header()
	h.V, h.Kind = Version, kindOf(m)
	b, err := signedBytes(m)
	if err != nil {
		return err
	}
	*sig = ed25519.Sign(k.Key, b)
	return nil
}

// Keyring holds the trusted public keys, by id (several for rotation).
type Keyring map[string]ed25519.PublicKey

// NewKeyring parses public keys in their String form.
func NewKeyring(keys ...string) (Keyring, error) {
	kr := Keyring{}
	for i, s := range keys {
		k, err := ParsePublicKey(s)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		kr[k.ID] = k.Key
	}
	return kr, nil
}

// Verify checks m's signature against the keyring: ErrUnsigned,
// ErrUnknownKey or ErrBadSignature when it does not hold.
func (kr Keyring) Verify(m Signable) error {
	kid, sig := m.sigFields()
	if len(*sig) == 0 {
		return ErrUnsigned
	}
	pub, ok := kr[*kid]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownKey, *kid)
	}
	b, err := signedBytes(m)
	if err != nil {
		return err
	}
	if len(*sig) != ed25519.SignatureSize || !ed25519.Verify(pub, b, *sig) {
		return fmt.Errorf("%w: key %q", ErrBadSignature, *kid)
	}
	return nil
}

// Expired reports whether an expiry time (Unix ms, 0 = never) has passed.
func Expired(expires int64, now time.Time) bool {
	return expires != 0 && now.UnixMilli() > expires
}
