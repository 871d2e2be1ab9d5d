// Package secretbox is lab's use of age (filippo.io/age) for per-machine
// secrets (docs/secrets.md): labctl encrypts a secret to a machine's
// recipient, labd loads the machine's identity and decrypts. A machine's
// identity is its SSH host ed25519 key (the agenix / sops-nix
// convention), else an age X25519 identity labd created in its state
// directory.
package secretbox

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"golang.org/x/crypto/ssh"
)

// AgeIdentityFile is the identity labd creates in its state directory
// when the machine has no readable SSH host ed25519 key.
const AgeIdentityFile = "age-identity.txt"

// Identity is a machine's decryption key and the recipient (public key)
// that secrets for it are encrypted to.
type Identity struct {
	age.Identity
	Recipient string // "ssh-ed25519 AAAA…" or "age1…"
	Source    string // the file it came from
}

// Parse parses a recipient as a node reports it: "age1…" or
// "ssh-ed25519 AAAA…" (an authorized_keys line; a comment is allowed).
func Parse(recipient string) (age.Recipient, error) {
	recipient = strings.TrimSpace(recipient)
	if strings.HasPrefix(recipient, "age1") {
		return age.ParseX25519Recipient(recipient)
	}
	if strings.HasPrefix(recipient, "ssh-ed25519 ") {
		return agessh.ParseRecipient(recipient)
	}
	return nil, fmt.Errorf("recipient %.40q: want age1… or ssh-ed25519 AAAA…", recipient)
}

// Encrypt encrypts plaintext to one recipient (age's binary format).
func Encrypt(plaintext []byte, recipient string) ([]byte, error) {
	r, err := Parse(recipient)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	if _, err := w.Write(plaintext); err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	return buf.Bytes(), nil
}

// ErrNotForThisMachine: the ciphertext was not encrypted to this
// machine's recipient.
var ErrNotForThisMachine = errors.New("not encrypted to this machine's recipient")

// Decrypt decrypts ciphertext with id, reading at most limit bytes of
// plaintext.
func Decrypt(ciphertext []byte, id age.Identity, limit int) ([]byte, error) {
	r, err := age.Decrypt(bytes.NewReader(ciphertext), id)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, ErrNotForThisMachine
		}
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	if len(b) > limit {
		return nil, fmt.Errorf("decrypt: plaintext longer than %d bytes", limit)
	}
	return b, nil
}

// Load returns the machine's identity: the SSH host ed25519 key at
// sshKey when it is readable (a missing or unreadable one is not an
// error), else the age identity in stateDir, created (mode 0600) when
// there is none. warn, when not empty, says why the SSH key was not used
// although it exists.
func Load(sshKey, stateDir string) (id Identity, warn string, err error) {
	if sshKey != "" {
		b, rerr := os.ReadFile(sshKey)
		switch {
		case rerr == nil:
			id, perr := fromSSH(b)
			if perr == nil {
				id.Source = sshKey
				return id, "", nil
			}
			warn = fmt.Sprintf("%s: %v: using an age identity in the state directory instead", sshKey, perr)
		case errors.Is(rerr, fs.ErrPermission):
			warn = fmt.Sprintf("%s is not readable by labd (%v): using an age identity in the state directory instead", sshKey, rerr)
		}
	}
	id, err = fromStateDir(filepath.Join(stateDir, AgeIdentityFile))
	return id, warn, err
}

func fromSSH(pemBytes []byte) (Identity, error) {
	raw, err := ssh.ParseRawPrivateKey(pemBytes)
	if err != nil {
		return Identity{}, fmt.Errorf("not a usable SSH private key: %w", err)
	}
	var priv ed25519.PrivateKey
	switch k := raw.(type) {
	case *ed25519.PrivateKey:
		priv = *k
	case ed25519.PrivateKey:
		priv = k
	default:
		return Identity{}, fmt.Errorf("a %T, not an ed25519 key", raw)
	}
	ai, err := agessh.NewEd25519Identity(priv)
	if err != nil {
		return Identity{}, err
	}
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		return Identity{}, err
	}
	return Identity{Identity: ai, Recipient: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))}, nil
}

func fromStateDir(path string) (Identity, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return create(path)
	}
	if err != nil {
		return Identity{}, fmt.Errorf("age identity: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			x, err := age.ParseX25519Identity(l)
			if err != nil {
				return Identity{}, fmt.Errorf("age identity %s: %w", path, err)
			}
			return Identity{Identity: x, Recipient: x.Recipient().String(), Source: path}, nil
		}
	}
	return Identity{}, fmt.Errorf("age identity %s holds no key (move it away: labd then creates a new one, and secrets must be set again)", path)
}

func create(path string) (Identity, error) {
	x, err := age.GenerateX25519Identity()
	if err != nil {
		return Identity{}, err
	}
	content := fmt.Sprintf("# labd's age identity; its recipient: %s\n%s\n", x.Recipient(), x)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Identity{}, fmt.Errorf("create age identity: %w", err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		os.Remove(path)
		return Identity{}, fmt.Errorf("create age identity: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return Identity{}, fmt.Errorf("create age identity: %w", err)
	}
	if err := f.Close(); err != nil {
		return Identity{}, fmt.Errorf("create age identity: %w", err)
	}
	return Identity{Identity: x, Recipient: x.Recipient().String(), Source: path}, nil
}
