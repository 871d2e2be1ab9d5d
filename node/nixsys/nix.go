package nixsys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// Defaults for Config.
const (
	DefaultProfile     = "/nix/var/nix/profiles/system"
	DefaultBootedLink  = "/run/booted-system"
	DefaultCurrentLink = "/run/current-system"
)

// Detach modes of Config.Detach.
const (
	DetachAuto       = "auto"
	DetachSystemdRun = "systemd-run"
	DetachSetsid     = "setsid"
)

// Actions that switch-to-configuration accepts.
var validActions = map[string]bool{"switch": true, "boot": true, "test": true, "dry-activate": true}

// System is what a node needs from Nix. *Nix implements it; package
// nixsystest has a fake.
type System interface {
	// Realise makes toplevel valid in the local store (substituting it);
	// the error includes the tail of Nix's stderr.
	Realise(ctx context.Context, toplevel string) error
	// SetProfile makes toplevel the profile's new generation.
	SetProfile(ctx context.Context, toplevel string) error
	// Current returns the store path the profile points to, "" if there
	// is no profile yet.
	Current() (string, error)
	// Booted returns the store path of the booted system, "" if unknown.
	Booted() (string, error)
	// Generations lists the profile's generations, oldest first.
	Generations() ([]Generation, error)
	// StartActivation starts <toplevel>/bin/switch-to-configuration
	// <action> detached from this process, recording it in runDir.
	StartActivation(ctx context.Context, toplevel, action, runDir string) (*Activation, error)
	// CheckActivation reports what would keep StartActivation from
	// running, before anything changes (the profile has not moved yet).
	CheckActivation(toplevel, action, runDir string) error
	// ResumeActivation reattaches to the activation recorded in runDir by
	// this or an earlier process; false if none is recorded.
	ResumeActivation(runDir string) (*Activation, bool, error)
	// SystemFile reads the file name (relative, e.g.
	// "etc/lab/secrets.json") of a realised toplevel; an error wrapping
	// fs.ErrNotExist when the system has none.
	SystemFile(toplevel, name string) ([]byte, error)
}

// Config configures Nix. The zero value is usable: every field has a default.
type Config struct {
	// Profile is the system profile, default DefaultProfile. Its
	// directory is created if missing.
	Profile string
	// NixBinDir holds nix-store and nix-env; "" looks them up in $PATH.
	NixBinDir string
	// Options are extra `--option NAME VALUE` pairs for nix-store,
	// flattened: {"substituters", "file:///x", "require-sigs", "false"}.
	// narinfo-cache-negative-ttl 0 is always added, so that a path pushed
	// to a cache after a failed lookup is found on the next attempt.
	Options []string
	// BootedLink is the booted system's link, default DefaultBootedLink.
	BootedLink string
	// CurrentLink is the active system's link, default
	// DefaultCurrentLink (informational only).
	CurrentLink string
	// Env is added to the environment of Nix and of the activation
	// (tests pass NIX_CONFIG, HOME, XDG_CACHE_HOME, FAKE_NIXOS_LOG, ...).
	Env []string
	// Detach is how the activation helper is started: DetachAuto
	// (default), DetachSystemdRun or DetachSetsid. See the package doc.
	Detach string
	// AllowNonStorePaths lets StartActivation run a toplevel outside
	// /nix/store. For tests only.
	AllowNonStorePaths bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Generation is one <profile>-N-link of the profile.
type Generation struct {
	Number   int
	Toplevel string    // store path the link points to
	Current  bool      // the profile points to this generation
	Link     string    // path of the <profile>-N-link symlink
	Created  time.Time // when the link was made (its modification time)
}

// Nix implements System with the real Nix tools.
type Nix struct {
	cfg    Config
	detach string // resolved: DetachSystemdRun or DetachSetsid
	log    *slog.Logger
}

var _ System = (*Nix)(nil)

// New checks cfg, fills its defaults and returns a Nix.
func New(cfg Config) (*Nix, error) {
	if cfg.Profile == "" {
		cfg.Profile = DefaultProfile
	}
	if !filepath.IsAbs(cfg.Profile) {
		return nil, fmt.Errorf("nixsys: profile %q: not an absolute path", cfg.Profile)
	}
	if cfg.BootedLink == "" {
		cfg.BootedLink = DefaultBootedLink
	}
	if cfg.CurrentLink == "" {
		cfg.CurrentLink = DefaultCurrentLink
	}
	if len(cfg.Options)%2 != 0 {
		return nil, fmt.Errorf("nixsys: options: %d values, want NAME VALUE pairs", len(cfg.Options))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Nix{cfg: cfg, log: cfg.Logger}
	switch cfg.Detach {
	case "", DetachAuto:
		n.detach = DetachSetsid
		if os.Getenv("INVOCATION_ID") != "" {
			if _, err := exec.LookPath("systemd-run"); err == nil {
				n.detach = DetachSystemdRun
			}
		}
	case DetachSystemdRun, DetachSetsid:
		n.detach = cfg.Detach
	default:
		return nil, fmt.Errorf("nixsys: detach %q: want %s, %s or %s", cfg.Detach, DetachAuto, DetachSystemdRun, DetachSetsid)
	}
	return n, nil
}

// ValidStorePath reports whether p is /nix/store/<32 nix-base32 chars>-<name>;
// the error wraps proto.ErrInvalidField and says what is wrong.
func ValidStorePath(p string) error { return proto.ValidStorePath(p) }

// Realise runs nix-store --realise toplevel.
func (n *Nix) Realise(ctx context.Context, toplevel string) error {
	if err := ValidStorePath(toplevel); err != nil {
		return fmt.Errorf("realise: %w", err)
	}
	args := []string{"--realise", toplevel, "--option", "narinfo-cache-negative-ttl", "0"}
	for i := 0; i+1 < len(n.cfg.Options); i += 2 {
		args = append(args, "--option", n.cfg.Options[i], n.cfg.Options[i+1])
	}
	if err := n.run(ctx, "nix-store", args...); err != nil {
		return fmt.Errorf("realise %s: %w", toplevel, err)
	}
	return nil
}

// SetProfile runs nix-env -p <profile> --set toplevel.
func (n *Nix) SetProfile(ctx context.Context, toplevel string) error {
	if err := ValidStorePath(toplevel); err != nil {
		return fmt.Errorf("set profile: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(n.cfg.Profile), 0o755); err != nil {
		return fmt.Errorf("set profile %s: %w", toplevel, err)
	}
	if err := n.run(ctx, "nix-env", "-p", n.cfg.Profile, "--set", toplevel); err != nil {
		return fmt.Errorf("set profile %s to %s: %w", n.cfg.Profile, toplevel, err)
	}
	return nil
}

// ExitError is returned when a Nix command fails: its exit status and the
// tail of its stderr.
type ExitError struct {
	Command string // e.g. "nix-store --realise /nix/store/..."
	Err     error  // the *exec.ExitError, or the error starting it
	Stderr  string // the last ~2 KiB of stderr
}

func (e *ExitError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("%s: %v", e.Command, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Command, e.Err, e.Stderr)
}

func (e *ExitError) Unwrap() error { return e.Err }

// run runs one Nix tool, without a shell, logging how long it took.
func (n *Nix) run(ctx context.Context, tool string, args ...string) error {
	path := tool
	if n.cfg.NixBinDir != "" {
		path = filepath.Join(n.cfg.NixBinDir, tool)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), n.cfg.Env...)
	cmd.WaitDelay = 5 * time.Second
	var stderr tailBuffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	n.log.Debug("nix command", "tool", tool, "args", args, "elapsed", time.Since(start), "err", err)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w (%v)", ctxErr, err)
		}
		return &ExitError{Command: tool + " " + args[0], Err: err, Stderr: string(bytes.TrimSpace(stderr.Bytes()))}
	}
	return nil
}

// tailLen is how much output is kept of a command (stderr, activation log).
const tailLen = 2048

// tailBuffer is an io.Writer that keeps the last tailLen bytes written.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 2*tailLen {
		t.b = append(t.b[:0], t.b[len(t.b)-tailLen:]...)
	}
	return len(p), nil
}

// Bytes returns the kept tail.
func (t *tailBuffer) Bytes() []byte {
	if len(t.b) > tailLen {
		return t.b[len(t.b)-tailLen:]
	}
	return t.b
}
