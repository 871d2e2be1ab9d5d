package integration

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lab-fleet/lab/internal/faultproxy"
)

// requireRoot skips, loudly, a test that needs network namespaces.
func requireRoot(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root for network namespaces (ip netns); CI runs the suite as root")
	}
	requireTools(t, append([]string{"ip"}, tools...)...)
}

// lan is a private network for one test (docs/reliability.md): a hub
// namespace holding a bridge (the switch, 10.200.0.1), one namespace per
// host with an eth0 on the bridge. The root namespace is not touched: the
// broker stays on loopback, and the hub forwards 10.200.0.1:PORT to it
// through a fault proxy listening inside the hub.
type lan struct {
	t      *testing.T
	prefix string
	hub    string
	mu     sync.Mutex
	hosts  []string
	next   int
}

func newLAN(t *testing.T) *lan {
	t.Helper()
	requireRoot(t)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	l := &lan{t: t, prefix: "lab" + hex.EncodeToString(b), next: 2}
	l.hub = l.prefix + "-hub"
	t.Cleanup(l.destroy)
	l.ip("netns", "add", l.hub)
	l.ip("-n", l.hub, "link", "set", "lo", "up")
	l.ip("-n", l.hub, "link", "add", "br0", "type", "bridge")
	// A fixed address: a bridge otherwise takes the lowest address of its
	// ports, so adding a host can change it under the hosts that already
	// resolved 10.200.0.1 (their frames then go nowhere until ARP expires;
	// seen in CI as the second of three hosts never connecting).
	l.ip("-n", l.hub, "link", "set", "br0", "address", "02:00:0a:c8:00:01")
	l.ip("-n", l.hub, "addr", "add", "10.200.0.1/24", "dev", "br0")
	l.ip("-n", l.hub, "link", "set", "br0", "up")
	return l
}

func (l *lan) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// run runs a command inside a host's namespace.
func (l *lan) run(ns string, args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput(); err != nil {
		l.t.Fatalf("in %s: %s: %v\n%s", ns, strings.Join(args, " "), err, out)
	}
}

// runInput is run with input on standard input.
func (l *lan) runInput(ns, input string, args ...string) {
	l.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdin = strings.NewReader(input)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("in %s: %s: %v\n%s", ns, strings.Join(args, " "), err, out)
	}
}

// addHost creates a host namespace on the bridge and returns it and its address.
func (l *lan) addHost(name string) (ns, addr string) {
	l.t.Helper()
	l.mu.Lock()
	ns, addr = l.prefix+"-"+name, fmt.Sprintf("10.200.0.%d", l.next)
	l.next++
	l.hosts = append(l.hosts, ns)
	l.mu.Unlock()
	l.ip("netns", "add", ns)
	l.ip("-n", ns, "link", "set", "lo", "up")
	l.ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", "p-"+name, "netns", l.hub)
	l.ip("-n", l.hub, "link", "set", "p-"+name, "master", "br0", "up")
	l.ip("-n", ns, "addr", "add", addr+"/24", "dev", "eth0")
	l.ip("-n", ns, "link", "set", "eth0", "up")
	return ns, addr
}

// cut pulls the host's cable at the switch; restore plugs it back in.
func (l *lan) cut(name string)     { l.ip("-n", l.hub, "link", "set", "p-"+name, "down") }
func (l *lan) restore(name string) { l.ip("-n", l.hub, "link", "set", "p-"+name, "up") }

// listen opens a TCP listener inside the hub namespace, from a thread that
// enters it for the one socket call (the socket stays in the hub).
func (l *lan) listen(addr string) net.Listener {
	l.t.Helper()
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is unlocked only once it is back in the root
		// namespace; otherwise it dies with this goroutine.
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer self.Close()
		hub, err := os.Open("/var/run/netns/" + l.hub)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer hub.Close()
		if err := unix.Setns(int(hub.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns %s: %w", l.hub, err)}
			return
		}
		ln, lerr := net.Listen("tcp", addr)
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			if ln != nil {
				ln.Close()
			}
			ch <- result{err: fmt.Errorf("setns back: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{ln, lerr}
	}()
	r := <-ch
	if r.err != nil {
		l.t.Fatalf("listen %s in %s: %v", addr, l.hub, r.err)
	}
	return r.l
}

// forward makes 127.0.0.1:port (root namespace) reachable from the hosts
// as 10.200.0.1:port, through a fault proxy.
func (l *lan) forward(port int) *faultproxy.Proxy {
	l.t.Helper()
	p := faultproxy.New(l.listen(fmt.Sprintf("10.200.0.1:%d", port)), fmt.Sprintf("127.0.0.1:%d", port))
	l.t.Cleanup(func() { p.Close() })
	return p
}

// serve serves h on 10.200.0.1:port inside the hub.
func (l *lan) serve(port int, h http.Handler) {
	srv := &http.Server{Handler: h}
	ln := l.listen(fmt.Sprintf("10.200.0.1:%d", port))
	go func() { _ = srv.Serve(ln) }()
	l.t.Cleanup(func() { srv.Close() })
}

// destroy kills what still runs in the namespaces and deletes them (the
// veths and the bridge go with them).
func (l *lan) destroy() {
	l.mu.Lock()
	all := append(append([]string(nil), l.hosts...), l.hub)
	l.mu.Unlock()
	for _, ns := range all {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, pid := range strings.Fields(string(out)) {
			_ = exec.Command("kill", "-9", pid).Run()
		}
	}
	for _, ns := range all {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			l.t.Logf("ip netns del %s: %v %s", ns, err, out)
		}
	}
}

// binaryCache is a signed Nix binary cache served over HTTP from the hub.
// While held, NAR downloads wait (a slow mirror), so a test can act while
// a node is fetching.
type binaryCache struct {
	Dir, URL, PublicKey, secretKey string
	mu                             sync.Mutex
	held                           chan struct{}
	narRequests                    int
}

func (e *Env) newBinaryCache(l *lan) *binaryCache {
	e.t.Helper()
	c := &binaryCache{Dir: filepath.Join(e.Dir, "cache")}
	sk, pk := filepath.Join(e.Dir, "cache.sk"), filepath.Join(e.Dir, "cache.pk")
	if out, err := e.command("nix-store", "--generate-binary-cache-key", "lab-test-cache", sk, pk).CombinedOutput(); err != nil {
		e.t.Fatalf("generate cache key: %v\n%s", err, out)
	}
	b, err := os.ReadFile(pk)
	if err != nil {
		e.t.Fatal(err)
	}
	c.PublicKey, c.secretKey = strings.TrimSpace(string(b)), sk
	port := freePort(e.t)
	c.URL = fmt.Sprintf("http://10.200.0.1:%d", port)
	files := http.FileServer(http.Dir(c.Dir))
	l.serve(port, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/nar/") {
			c.mu.Lock()
			c.narRequests++
			held := c.held
			c.mu.Unlock()
			if held != nil {
				select {
				case <-held:
				case <-r.Context().Done():
					return
				}
			}
		}
		files.ServeHTTP(w, r)
	}))
	return c
}

// push copies store paths (with their closures) into the cache, signed.
func (c *binaryCache) push(e *Env, paths ...string) {
	e.t.Helper()
	args := append([]string{"copy", "--to", "file://" + c.Dir + "?secret-key=" + c.secretKey}, paths...)
	if out, err := e.command("nix", args...).CombinedOutput(); err != nil {
		e.t.Fatalf("nix %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// hold makes NAR downloads wait until release.
func (c *binaryCache) hold() {
	c.mu.Lock()
	c.held = make(chan struct{})
	c.mu.Unlock()
}

func (c *binaryCache) release() {
	c.mu.Lock()
	if c.held != nil {
		close(c.held)
		c.held = nil
	}
	c.mu.Unlock()
}

func (c *binaryCache) narCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.narRequests
}

// NewLANNode is a node on its own host of the lan: its own network
// namespace, its own /nix (empty but for what it substitutes from the
// cache), reaching the broker through the hub's proxy. initial is
// installed from the cache as its current system.
func (e *Env) NewLANNode(l *lan, c *binaryCache, name string, groups []string, initial string) *Node {
	e.t.Helper()
	ns, _ := l.addHost(name)
	n := e.NewNode(name, groups, "")
	n.netns, n.nixRoot = ns, filepath.Join(n.Dir, "nix")
	if err := os.MkdirAll(n.nixRoot, 0o755); err != nil {
		e.t.Fatal(err)
	}
	n.setBroker(fmt.Sprintf("mqtt://10.200.0.1:%d", e.Port), "keepalive: 5s",
		fmt.Sprintf("nix:\n  options: [substituters, %q, trusted-public-keys, %q]", c.URL, c.PublicKey))
	if initial != "" {
		script := `set -e
mount --bind "$LAB_NODE_NIX" /nix
nix-store --realise "$1" --option substituters "$2" --option trusted-public-keys "$3" >/dev/null
nix-env -p "$4" --set "$1"`
		cmd := e.command("ip", "netns", "exec", ns, "sh", "-c", script, "sh", initial, c.URL, c.PublicKey, n.Profile)
		cmd.Env = append(cmd.Env, "LAB_NODE_NIX="+n.nixRoot)
		if out, err := cmd.CombinedOutput(); err != nil {
			e.t.Fatalf("installing %s on %s: %v\n%s", initial, name, err, out)
		}
	}
	return n
}
