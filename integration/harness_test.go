package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	nixfiles "github.com/lab-fleet/lab/nix"
	"github.com/lab-fleet/lab/proto"
)

// bin holds the paths of the binaries built once by TestMain.
var bin struct{ labctl, labd string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lab-integration-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	args := []string{"build", "-o", dir + "/"}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "../cmd/labctl", "../cmd/labd")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: building binaries:", err)
		os.Exit(1)
	}
	bin.labctl, bin.labd = filepath.Join(dir, "labctl"), filepath.Join(dir, "labd")
	code := m.Run()
	os.RemoveAll(dir)
	if mosqCreds.dir != "" {
		os.RemoveAll(mosqCreds.dir)
	}
	os.Exit(code)
}

// requireTools skips the test loudly when a tool it needs is missing.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIPPED: %s not found; install it (scripts/test does: apt-get install -y nix-bin mosquitto mosquitto-clients)", tool)
		}
	}
}

// Env is one test's world: a broker, a Nix environment, a signing key.
type Env struct {
	t       *testing.T
	Dir     string
	NixEnv  []string // environment for every nix and labd process
	Port    int
	Key     proto.PrivateKey
	KeyFile string

	mu     sync.Mutex
	broker *exec.Cmd
	watch  *Watcher
	creds  *creds // set when the broker wants identities (the mosquitto pass)
	// service: labctl submits rollouts to a controller service (labctl
	// broker's, or a labctl controller beside mosquitto) instead of
	// driving them itself; brokerArgs are extra labctl broker flags.
	service    bool
	brokerArgs []string
	controller *exec.Cmd
	// controllerStarts counts the labctl controller starts (its log is
	// appended to).
	controllerStarts int
	// controllerEnv is extra environment for labctl controller (its
	// identity, where the test's broker is not the mosquitto pass's).
	controllerEnv []string
}

// NewEnv prepares an environment; call StartBroker to run the broker.
func NewEnv(t *testing.T) *Env {
	t.Helper()
	requireTools(t, "nix-build", "nix-store", "nix-env")
	dir := t.TempDir()
	e := &Env{t: t, Dir: dir, Port: freePort(t)}
	e.NixEnv = []string{
		"NIX_CONFIG=build-users-group =\nsubstituters =\nexperimental-features = nix-command flakes\nnarinfo-cache-negative-ttl = 0",
		"HOME=" + filepath.Join(dir, "home"),
		"XDG_CACHE_HOME=" + filepath.Join(dir, "cache"),
	}
	if err := os.WriteFile(filepath.Join(dir, "fake-system.nix"), nixfiles.FakeSystem, 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := proto.GenerateKey("op-test")
	if err != nil {
		t.Fatal(err)
	}
	e.Key, e.KeyFile = k, filepath.Join(dir, "operator.key")
	if err := os.WriteFile(e.KeyFile, []byte(k.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// BrokerURL is the broker's mqtt:// URL.
func (e *Env) BrokerURL() string { return fmt.Sprintf("mqtt://127.0.0.1:%d", e.Port) }

// StartBroker runs `labctl broker` with a persistent data directory (or
// mosquitto, with LAB_TEST_BROKER=mosquitto) and waits until it accepts
// connections.
func (e *Env) StartBroker() {
	e.t.Helper()
	if externalBroker() == "mosquitto" {
		e.startMosquittoPlain()
		return
	}
	e.startBrokerArgs()
}

// Build builds a fake system with nix-build and returns its store path.
// args are extra nix-build arguments, e.g. "--arg", "failHealth", "true".
func (e *Env) Build(name string, gen int, args ...string) string {
	e.t.Helper()
	all := append([]string{filepath.Join(e.Dir, "fake-system.nix"), "--no-out-link",
		"--argstr", "name", name, "--arg", "gen", fmt.Sprint(gen)}, args...)
	out, err := e.command("nix-build", all...).Output()
	if err != nil {
		e.t.Fatalf("nix-build %v: %v\n%s", all, err, stderrOf(err))
	}
	p := strings.TrimSpace(string(out))
	if err := proto.ValidStorePath(p); err != nil {
		e.t.Fatalf("nix-build printed %q: %v", p, err)
	}
	return p
}

func (e *Env) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), e.NixEnv...)
	return cmd
}

// Labctl runs labctl against the env's broker and returns its exit code,
// stdout and stderr.
func (e *Env) Labctl(args ...string) (int, string, string) {
	e.t.Helper()
	cmd := e.command(bin.labctl, args...)
	cmd.Env = append(append(cmd.Env, "LAB_BROKER="+e.BrokerURL()), e.labctlEnv()...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			e.t.Fatalf("labctl %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	e.t.Logf("labctl %s → exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
	return code, out.String(), errb.String()
}

// Watch returns the env's status watcher, started on first use.
func (e *Env) Watch() *Watcher {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.watch == nil {
		if e.creds != nil {
			e.watch = newWatcher(e.t, e.BrokerURL(), mosqViewer, e.creds.password(e.t, mosqViewer))
		} else {
			e.watch = newWatcher(e.t, e.BrokerURL())
		}
	}
	return e.watch
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitPort(t *testing.T, port int) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("port %d to accept connections", port), func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// eventually polls cond every 50 ms until it holds or total passes.
func eventually(t *testing.T, total time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(total)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", total, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopProcess sends SIGTERM, then SIGKILL after 10 s, and reaps.
func stopProcess(cmd *exec.Cmd) {
	if cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// Watcher keeps the latest retained status and presence of every node, as
// any MQTT client could.
type Watcher struct {
	mu       sync.Mutex
	status   map[string]proto.NodeStatus
	presence map[string]bool
	events   map[string][]proto.Event
	rollouts map[string]proto.RolloutState
}

// newWatcher connects anonymously, or as user (password) when given.
func newWatcher(t *testing.T, url string, creds ...string) *Watcher {
	w := &Watcher{status: map[string]proto.NodeStatus{}, presence: map[string]bool{}, events: map[string][]proto.Event{}, rollouts: map[string]proto.RolloutState{}}
	tp := proto.DefaultTopics
	cfg := bus.Config{URLs: []string{url}, ClientID: "test-watch-" + proto.NewID()[:8], CleanStart: true,
		OnMessage: func(m bus.Message) { w.handle(tp, m) }}
	if len(creds) == 2 {
		cfg.Username, cfg.Password, cfg.ClientID = creds[0], []byte(creds[1]), creds[0]+"-watch"
	}
	c, err := bus.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(ctx, tp.AllStatus(), tp.AllPresence(), tp.AllEvents(), tp.AllRollouts()); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *Watcher) handle(tp proto.Topics, m bus.Message) {
	r, err := tp.Parse(m.Topic)
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch r.Kind {
	case proto.TopicStatus:
		var s proto.NodeStatus
		if proto.Decode(m.Payload, &s) == nil {
			w.status[r.Node] = s
		}
	case proto.TopicPresence:
		var p proto.Presence
		if proto.Decode(m.Payload, &p) == nil {
			w.presence[r.Node] = p.Online
		}
	case proto.TopicEvents:
		var ev proto.Event
		if proto.Decode(m.Payload, &ev) == nil {
			w.events[r.Node] = append(w.events[r.Node], ev)
		}
	case proto.TopicRollout:
		var rs proto.RolloutState
		if proto.Decode(m.Payload, &rs) == nil {
			w.rollouts[r.ID] = rs
		}
	}
}

// Rollout returns the latest retained state of a rollout.
func (w *Watcher) Rollout(id string) (proto.RolloutState, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	rs, ok := w.rollouts[id]
	return rs, ok
}

// Status returns the latest status of a node.
func (w *Watcher) Status(node string) (proto.NodeStatus, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.status[node]
	return s, ok
}

// Online reports the node's last presence.
func (w *Watcher) Online(node string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.presence[node]
}

// Events returns the events seen from a node.
func (w *Watcher) Events(node string) []proto.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]proto.Event(nil), w.events[node]...)
}

// AwaitState waits until the node's execution reaches state for rollout.
func (w *Watcher) AwaitState(t *testing.T, node, rollout string, state proto.ExecState, total time.Duration) proto.NodeStatus {
	t.Helper()
	var s proto.NodeStatus
	eventually(t, total, fmt.Sprintf("%s to reach %s in %s", node, state, rollout), func() bool {
		s, _ = w.Status(node)
		return s.Execution.Rollout == rollout && s.Execution.State == state
	})
	return s
}
