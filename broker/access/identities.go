package access

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/lab-fleet/lab/proto"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"
)

// Role is what an identity is for.
type Role string

// The roles.
const (
	RoleNode       Role = "node"       // one machine running labd
	RoleController Role = "controller" // labctl: publishes desired state, gates, commands, rollouts
	RoleViewer     Role = "viewer"     // dashboards: reads status, presence, rollouts
)

// Identity is one entry of the identities file.
type Identity struct {
	Name         string   `yaml:"name" json:"name"`
	Role         Role     `yaml:"role" json:"role"`
	Groups       []string `yaml:"groups,omitempty" json:"groups,omitempty"` // nodes: the groups whose gates and commands it may read
	PasswordHash string   `yaml:"password_hash" json:"password_hash"`       // $sha256$ token digest, or bcrypt
}

// File is the identities file.
type File struct {
	Identities []Identity `yaml:"identities"`
}

// ErrInvalid wraps every problem of an identities file.
var ErrInvalid = errors.New("invalid identities file")

// Table is a loaded, validated identities file with the topic layout the
// rules apply to.
type Table struct {
	topics   proto.Topics
	byName   map[string]Identity
	digests  map[string][sha256.Size]byte // by name: the token digests, decoded once
	patterns map[string]patterns          // by name: each identity's topic patterns
}

// Load reads and validates an identities file.
func Load(path string, topics proto.Topics) (*Table, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identities: %w", err)
	}
	var f File
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, path, err)
	}
	return New(f, topics)
}

// New validates identities: names are lab ids and unique, roles known,
// groups valid (nodes only), hashes bcrypt.
func New(f File, topics proto.Topics) (*Table, error) {
	t := &Table{topics: topics, byName: map[string]Identity{}, digests: map[string][sha256.Size]byte{}}
	var errs []error
	for i, id := range f.Identities {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%w: identities[%d] (%s): %s", ErrInvalid, i, id.Name, fmt.Sprintf(format, args...)))
		}
		if err := proto.ValidID(id.Name); err != nil {
			bad("name: %v", err)
		}
		if _, dup := t.byName[id.Name]; dup {
			bad("name: listed twice")
		}
		switch id.Role {
		case RoleNode, RoleController, RoleViewer:
		default:
			bad("role %q: want node, controller or viewer", id.Role)
		}
		if len(id.Groups) > 0 && id.Role != RoleNode {
			bad("groups: only nodes belong to groups")
		}
		for _, g := range id.Groups {
			if err := proto.ValidID(g); err != nil {
				bad("groups: %v", err)
			}
		}
		if d, err := parseHash(id.PasswordHash); err != nil {
			bad("password_hash: %v", err)
		} else if d != nil {
			t.digests[id.Name] = *d
		}
		t.byName[id.Name] = id
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	t.patterns = make(map[string]patterns, len(t.byName))
	for name, id := range t.byName {
		t.patterns[name] = patterns{id: id, publish: t.buildPublishes(id), reads: t.buildReads(id)}
	}
	return t, nil
}

// Two kinds of password hash. A token is a random secret labctl node add
// generated (192 bits): guessing it is hopeless however fast a guess is
// checked, so it is stored as its SHA-256 digest ("$sha256$<hex>") and
// checked in a microsecond — a broker restart's reconnect storm or a flood
// of wrong logins costs no CPU worth speaking of. A password a person
// chose may be guessable: it is stored as bcrypt ("$2a$…"), slow on
// purpose.
const tokenPrefix = "$sha256$"

// MinTokenLen is the shortest secret HashToken accepts: 22 base64
// characters carry 128 bits.
const MinTokenLen = 22

// HashToken returns the digest to store for a generated secret of at
// least MinTokenLen characters (labctl node add writes 32: 192 bits).
func HashToken(token []byte) (string, error) {
	if len(token) < MinTokenLen {
		return "", fmt.Errorf("a token needs at least %d characters (128 bits); hash a password a person chose with HashPassword", MinTokenLen)
	}
	d := sha256.Sum256(token)
	return tokenPrefix + hex.EncodeToString(d[:]), nil
}

// HashPassword returns the bcrypt hash to store for a password a person
// chose.
func HashPassword(password []byte) (string, error) {
	h, err := bcrypt.GenerateFromPassword(password, bcrypt.DefaultCost)
	return string(h), err
}

// parseHash checks that h is a hash Authenticate can check and returns
// the digest of a token hash (nil for bcrypt).
func parseHash(h string) (*[sha256.Size]byte, error) {
	if rest, ok := strings.CutPrefix(h, tokenPrefix); ok {
		var d [sha256.Size]byte
		if n, err := hex.Decode(d[:], []byte(rest)); err != nil || n != sha256.Size || len(rest) != 2*sha256.Size {
			return nil, errors.New("a $sha256$ hash needs 64 hex digits after the prefix")
		}
		return &d, nil
	}
	if _, err := bcrypt.Cost([]byte(h)); err != nil {
		return nil, errors.New("neither a $sha256$ token digest nor a bcrypt hash (labctl node add writes one)")
	}
	return nil, nil
}

// dummyDigest is compared against when the user is unknown, so that an
// unknown user costs as long as a wrong token.
var dummyDigest = sha256.Sum256([]byte("lab: no such user"))

// Authenticate checks a username and password: a token digest in constant
// time, a bcrypt hash by bcrypt.
func (t *Table) Authenticate(user string, password []byte) (Identity, bool) {
	id, ok := t.byName[user]
	if want, isToken := t.digests[user]; isToken || !ok {
		if !ok {
			want = dummyDigest
		}
		got := sha256.Sum256(password)
		return id, subtle.ConstantTimeCompare(got[:], want[:]) == 1 && ok
	}
	return id, bcrypt.CompareHashAndPassword([]byte(id.PasswordHash), password) == nil
}

// Slow reports whether user's password is a bcrypt hash, expensive to
// check (false for tokens and for unknown users, checked against a dummy
// digest).
func (t *Table) Slow(user string) bool {
	id, ok := t.byName[user]
	_, isToken := t.digests[user]
	return ok && !isToken && id.PasswordHash != ""
}

// Lookup returns an identity by name.
func (t *Table) Lookup(name string) (Identity, bool) {
	id, ok := t.byName[name]
	return id, ok
}

// ClientIDAllowed binds client ids to identities. A node's client id is
// its name. A controller or viewer may run several clients at once, under
// any client id that does not belong to another identity (an empty one
// too: the broker assigns one). A client id belongs to the identity of
// that name, else to the controller or viewer whose name followed by "-"
// is its longest such prefix ("ops-laptop" is ops's). So no client can
// take another identity's session over: a viewer "a" cannot connect as
// node "a-b", nor as "ops-1".
func (t *Table) ClientIDAllowed(id Identity, clientID string) bool {
	if id.Role == RoleNode {
		return subtle.ConstantTimeCompare([]byte(id.Name), []byte(clientID)) == 1
	}
	owner, ok := t.owner(clientID)
	return !ok || owner == id.Name
}

// owner returns the identity a client id belongs to, if any: one map
// lookup per "-" in it (the ACL check runs it on every publish).
func (t *Table) owner(clientID string) (string, bool) {
	if _, ok := t.byName[clientID]; ok {
		return clientID, true
	}
	for i := len(clientID) - 1; i > 0; i-- {
		if clientID[i] != '-' {
			continue
		}
		if id, ok := t.byName[clientID[:i]]; ok && id.Role != RoleNode {
			return id.Name, true
		}
	}
	return "", false
}

// Save writes the identities file atomically (mode 0600): a temporary file
// in the same directory, then a rename, so that the broker never reads a
// half-written file.
func Save(path string, f File) error {
	b, err := yaml.Marshal(f)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".identities-*")
	if err != nil {
		return fmt.Errorf("identities: %w", err)
	}
	defer os.Remove(tmp.Name())
	header := "# lab broker identities: written by `labctl node add`; the broker reloads it on change.\n"
	if _, err := tmp.WriteString(header + string(b)); err != nil {
		tmp.Close()
		return fmt.Errorf("identities: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("identities: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("identities: %w", err)
	}
	return os.Rename(tmp.Name(), path)
}

// ReadFile reads an identities file without validating it; a missing file
// is an empty one.
func ReadFile(path string) (File, error) {
	var f File
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("identities: %w", err)
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%w: %s: %v", ErrInvalid, path, err)
	}
	return f, nil
}

// Put adds or replaces an identity by name.
func (f *File) Put(id Identity) {
	for i := range f.Identities {
		if f.Identities[i].Name == id.Name {
			f.Identities[i] = id
			return
		}
	}
	f.Identities = append(f.Identities, id)
}

// Remove deletes the identity of that name; it reports whether there was one.
func (f *File) Remove(name string) bool {
	for i := range f.Identities {
		if f.Identities[i].Name == name {
			f.Identities = append(f.Identities[:i], f.Identities[i+1:]...)
			return true
		}
	}
	return false
}
