package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/lab-fleet/lab/internal/secretbox"
	"github.com/lab-fleet/lab/proto"
)

// secretsFile holds the secret records inside StateDir.
const secretsFile = "secrets.json"

// restartTimeout bounds each unit restart after a secret changed.
const restartTimeout = 2 * time.Minute

// secretKeeper owns the node's secrets: run is the one goroutine that
// changes them; report may be called from anywhere.
type secretKeeper struct {
	cfg      SecretsConfig
	stateDir string
	log      *slog.Logger
	id       secretbox.Identity
	idErr    error // no identity: every secret is refused with it
	in       chan secretInput
	done     <-chan struct{} // closed when run has stopped taking inputs
	now      func() time.Time
	rejected func(reason string) // an event and a log line
	changed  func()              // the status changed
	problem  func(err error)     // a problem of the node itself (nil clears it)

	mu   sync.Mutex
	recs map[string]secretRecord
}

func newSecretKeeper(cfg SecretsConfig, stateDir string, log *slog.Logger) (*secretKeeper, error) {
	k := &secretKeeper{cfg: cfg, stateDir: stateDir, log: log, in: make(chan secretInput, 64), now: time.Now,
		rejected: func(string) {}, changed: func() {}, problem: func(error) {}, recs: map[string]secretRecord{}}
	b, err := os.ReadFile(filepath.Join(stateDir, secretsFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read secret records: %w", err)
	default:
		if err := json.Unmarshal(b, &k.recs); err != nil {
			return nil, fmt.Errorf("%w: %s: %v (it holds the newest version of each secret, which stops replays: fix it or move it away)",
				ErrCorruptState, filepath.Join(stateDir, secretsFile), err)
		}
	}
	id, warn, err := secretbox.Load(cfg.IdentityFile, stateDir)
	if warn != "" {
		log.Warn("secrets: SSH host key not used", "detail", warn)
	}
	if err != nil {
		k.idErr = fmt.Errorf("this node has no identity to decrypt secrets with: %w", err)
		log.Error("secrets: no identity", "err", err)
	} else {
		k.id = id
		log.Info("secrets: identity", "recipient", id.Recipient, "from", id.Source)
	}
	if _, err := os.Stat(cfg.Dir); err == nil && !onTmpfs(cfg.Dir) { // created with the first secret
		log.Warn("secrets: secrets.dir is not on a tmpfs: secrets written there reach a disk", "dir", cfg.Dir)
	}
	return k, nil
}

// send hands one input to run (dropped once run has stopped).
func (k *secretKeeper) send(in secretInput) {
	select {
	case k.in <- in:
	case <-k.done:
	}
}

// run applies inputs until ctx ends.
func (k *secretKeeper) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case in := <-k.in:
			k.handle(ctx, in)
		}
	}
}

func (k *secretKeeper) record(name string) (secretRecord, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	r, ok := k.recs[name]
	return r, ok
}

func (k *secretKeeper) handle(ctx context.Context, in secretInput) {
	rec, have := k.record(in.name)
	exists := false
	if have && rec.Path != "" {
		_, err := os.Lstat(rec.Path)
		exists = err == nil
	}
	now := k.now()
	plan := planSecret(rec, have, in, exists, now, k.cfg.Dir)
	switch plan.op {
	case secretKeep:
		return
	case secretReject:
		k.refuse(in.name, rec, have, plan.reason)
	case secretRemove:
		if err := os.Remove(plan.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			rec.State, rec.Error, rec.At = proto.SecretError, "remove: "+err.Error(), now.UnixMilli()
			k.log.Error("secret not removed", "secret", in.name, "err", err)
		} else {
			rec.Removed, rec.Error, rec.At = true, "", now.UnixMilli()
			k.log.Info("secret removed", "secret", in.name, "version", rec.Version, "path", plan.path)
		}
		k.save(in.name, rec)
	case secretWrite:
		k.write(ctx, in.msg, plan.path, rec, have)
	}
	k.changed()
}

// refuse reports a secret that is not put in place; its file stays.
func (k *secretKeeper) refuse(name string, rec secretRecord, have bool, reason string) {
	k.rejected(fmt.Sprintf("secret %s: %s; its file is left as it was", name, reason))
	if !have {
		k.mu.Lock()
		full := len(k.recs) >= proto.MaxReportedSecrets
		k.mu.Unlock()
		if full {
			return
		}
		rec.State = proto.SecretError
	}
	if rec.Removed || rec.Path == "" {
		rec.State = proto.SecretError
	}
	rec.Error, rec.At = reason, k.now().UnixMilli()
	k.save(name, rec)
}

func (k *secretKeeper) write(ctx context.Context, m *proto.Secret, path string, rec secretRecord, have bool) {
	if k.idErr != nil {
		k.refuse(m.Name, rec, have, k.idErr.Error())
		return
	}
	plain, err := secretbox.Decrypt(m.Ciphertext, k.id, proto.MaxSecretContent)
	if errors.Is(err, secretbox.ErrNotForThisMachine) {
		err = fmt.Errorf("version %d is not encrypted to this machine's recipient %s (labctl secret recipients; set it again)", m.Version, k.id.Recipient)
	}
	if err != nil {
		k.refuse(m.Name, rec, have, err.Error())
		return
	}
	err = writeSecretFile(path, plain, m.Owner, m.Group, m.Mode)
	clear(plain)
	if err != nil {
		k.refuse(m.Name, rec, have, err.Error())
		return
	}
	if have && rec.Path != "" && rec.Path != path && !rec.Removed {
		_ = os.Remove(rec.Path) // the secret moved
	}
	rec = secretRecord{Version: m.Version, Path: path, State: proto.SecretPresent, At: k.now().UnixMilli(),
		Owner: m.Owner, Group: m.Group, Mode: fileMode(m.Mode)}
	k.save(m.Name, rec)
	k.log.Info("secret in place", "secret", m.Name, "version", m.Version, "path", path)
	var failed []string
	for _, u := range m.Restart {
		if err := k.restart(ctx, u); err != nil {
			k.log.Warn("secret: unit not restarted", "secret", m.Name, "unit", u, "err", err)
			failed = append(failed, fmt.Sprintf("restart %s: %v", u, err))
		}
	}
	if len(failed) > 0 {
		rec.Error = clip(fmt.Sprint(failed), 256)
		k.save(m.Name, rec)
	}
}

func (k *secretKeeper) restart(ctx context.Context, unit string) error {
	ctx, cancel := context.WithTimeout(ctx, restartTimeout)
	defer cancel()
	argv := append(slices.Clone(k.cfg.RestartCommand), unit)
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, tail(string(out), 200))
	}
	return nil
}

// save records rec and persists every record (write-then-rename).
func (k *secretKeeper) save(name string, rec secretRecord) {
	k.mu.Lock()
	k.recs[name] = rec
	b, err := json.MarshalIndent(k.recs, "", "  ")
	k.mu.Unlock()
	if err == nil {
		err = writeAtomic(filepath.Join(k.stateDir, secretsFile), b, 0o600)
	}
	if err != nil {
		k.log.Error("cannot persist secret records", "err", err)
		err = fmt.Errorf("secret records not saved (a replay of an older secret may be taken after a restart): %w", err)
	}
	k.problem(err)
}

// present lists the secrets in place now, by name.
func (k *secretKeeper) present() map[string]held {
	k.mu.Lock()
	defer k.mu.Unlock()
	return presentSecrets(k.recs, func(p string) bool { _, err := os.Lstat(p); return err == nil })
}

// report is the node's recipient and its secrets for the status.
func (k *secretKeeper) report() (string, []proto.SecretState) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []proto.SecretState
	for name, r := range k.recs {
		if r.Removed && r.State != proto.SecretError {
			continue
		}
		st := proto.SecretState{Name: name, Version: r.Version, State: r.State, Error: clip(r.Error, 256), At: r.At}
		if !r.Removed && proto.ValidSecretPath(r.Path) == nil {
			st.Path = r.Path
		}
		if r.Removed {
			st.Version = 0
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b proto.SecretState) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	if len(out) > proto.MaxReportedSecrets {
		out = out[:proto.MaxReportedSecrets]
	}
	return k.id.Recipient, out
}

// fileMode is the mode writeSecretFile gives a secret of mode m.
func fileMode(m uint32) uint32 {
	if m == 0 {
		return 0o400
	}
	return m
}

// writeSecretFile writes content to path atomically: a temporary file in
// the same directory, owner, group and mode set before the content is
// visible under path, fsync, rename, fsync of the directory.
func writeSecretFile(path string, content []byte, owner, group string, mode uint32) error {
	mode = fileMode(mode)
	uid, gid, err := lookupOwner(owner, group)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o751); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	fail := func(err error) error { tmp.Close(); return fmt.Errorf("write %s: %w", path, err) }
	if err := tmp.Chmod(fs.FileMode(mode)); err != nil {
		return fail(err)
	}
	if uid != -1 || gid != -1 {
		if err := tmp.Chown(uid, gid); err != nil {
			return fail(err)
		}
	}
	if _, err := tmp.Write(content); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	syncDir(dir)
	return nil
}

func lookupOwner(owner, group string) (uid, gid int, err error) {
	uid, gid = -1, -1
	if owner != "" {
		if uid, err = strconv.Atoi(owner); err != nil {
			u, err := user.Lookup(owner)
			if err != nil {
				return 0, 0, fmt.Errorf("owner %s: %w", owner, err)
			}
			uid, _ = strconv.Atoi(u.Uid)
		}
	}
	if group != "" {
		if gid, err = strconv.Atoi(group); err != nil {
			g, err := user.LookupGroup(group)
			if err != nil {
				return 0, 0, fmt.Errorf("group %s: %w", group, err)
			}
			gid, _ = strconv.Atoi(g.Gid)
		}
	}
	return uid, gid, nil
}

// writeAtomic writes a file by temporary file, fsync and rename.
func writeAtomic(path string, b []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// checkSecret decodes strictly and verifies what the payload cannot
// prove by itself: it is for this node and this name, and signed by a
// pinned operator key. Unlike a Desired, a Secret is never taken
// unsigned, even by a node that pins no key.
func (d *Daemon) checkSecret(payload []byte, s *proto.Secret, name string) error {
	if err := proto.Decode(payload, s); err != nil {
		return err
	}
	switch {
	case s.Node != d.cfg.Name:
		return fmt.Errorf("%w: addressed to node %q, this is %q", proto.ErrInvalidField, s.Node, d.cfg.Name)
	case s.Name != name:
		return fmt.Errorf("%w: names secret %q but came on the topic of %q", proto.ErrInvalidField, s.Name, name)
	case len(d.keys.operator) == 0:
		return errors.New("no operator key pinned (trusted_keys): this node takes no secret, signed or not")
	}
	return d.keys.operator.Verify(s)
}

// secretMessage takes one message on a secret topic (intake).
func (d *Daemon) secretMessage(r proto.Route, payload []byte) {
	if r.Node != d.cfg.Name {
		d.reject("", 0, fmt.Sprintf("secret %s for node %s on this node's connection: ignored", r.ID, r.Node))
		return
	}
	in := secretInput{name: r.ID}
	if len(payload) > 0 {
		in.msg = new(proto.Secret)
		if err := d.checkSecret(payload, in.msg, r.ID); err != nil {
			in.err = err
		}
	}
	d.secrets.send(in)
}

// startSecrets wires the keeper to the daemon and runs it until ctx ends.
func (d *Daemon) startSecrets(ctx context.Context) {
	k := d.secrets
	k.now = d.m.clock.Now
	k.rejected = func(reason string) { d.reject("", 0, reason) }
	k.changed = func() {
		d.enqueueStatus()
		d.sendCtx(ctx, evSecrets{present: k.present()}) // a rollout may wait for one (secrets_needed.go)
	}
	k.problem = func(err error) {
		if d.setProblem("secrets", err) {
			d.enqueueStatus()
		}
	}
	if k.idErr != nil {
		k.problem(k.idErr)
	}
	k.done = ctx.Done()
	go k.run(ctx)
}
