package integration

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/faultproxy"
	"github.com/lab-fleet/lab/proto"
)

// lanFleet is a broker on loopback, a lan whose hub forwards to it, a
// signed binary cache in the hub, and nodes on their own hosts.
type lanFleet struct {
	*Env
	lan   *lan
	proxy *faultproxy.Proxy // the hub's forwarder to the broker
	cache *binaryCache
	nodes []*Node
}

func newLANFleet(t *testing.T) *lanFleet {
	t.Helper()
	l := newLAN(t)
	e := NewEnv(t)
	e.StartBroker()
	p := l.forward(e.Port)
	return &lanFleet{Env: e, lan: l, proxy: p, cache: e.newBinaryCache(l)}
}

// add builds nothing: it pushes initial (and more) to the cache and
// creates a node installed with initial.
func (f *lanFleet) add(name, initial string, more ...string) *Node {
	f.t.Helper()
	f.cache.push(f.Env, append([]string{initial}, more...)...)
	n := f.NewLANNode(f.lan, f.cache, name, []string{"web"}, initial)
	f.nodes = append(f.nodes, n)
	f.DumpOnFailure(n)
	return n
}

func (f *lanFleet) startAll() { f.startNodes(f.nodes) }

func linkUp(t *testing.T, ns string) bool {
	out, err := exec.Command("ip", "-n", ns, "-br", "link", "show", "eth0").Output()
	if err != nil {
		t.Fatalf("ip link show in %s: %v", ns, err)
	}
	return strings.Contains(string(out), "UP")
}

// Magic rollback: the new configuration takes the node's network down as
// it activates. The node cannot confirm a round trip to the broker within
// the confirm deadline, so it rolls back by itself — which brings the
// network back — and reports why once it is reachable again.
func TestMagicRollbackWhenActivationCutsTheNetwork(t *testing.T) {
	f := newLANFleet(t)
	g1 := f.Build("n1", 1, "--argstr", "onSwitch", "ip link set eth0 up")
	g2 := f.Build("n1", 2, "--argstr", "onSwitch", "ip link set eth0 down")
	n := f.add("n1", g1, g2)
	f.startAll()
	code, out, _ := f.Labctl("publish", "--id", "r-cut", "--key", f.KeyFile, "--toplevel", "n1="+g2,
		"--confirm-timeout", "10s", "--timeout", "120s")
	if code == exitSucceeded {
		t.Fatalf("publish succeeded although n1 lost its network:\n%s", out)
	}
	s := f.Watch().AwaitState(t, "n1", "r-cut", proto.StateTimedOut, 60*time.Second)
	if !strings.Contains(s.Execution.Error, "broker was not reachable from the new system") || !strings.Contains(s.Execution.Error, "rolled back") {
		t.Errorf("status error %q does not say the confirm deadline passed and it rolled back", s.Execution.Error)
	}
	if n.Current() != g1 || s.Current != g1 || s.AppliedGen == s.Execution.Gen {
		t.Errorf("profile %s, status current %s applied %d (exec gen %d): want back on gen 1", n.Current(), s.Current, s.AppliedGen, s.Execution.Gen)
	}
	if sw := n.Switches(); len(sw) != 2 || switched(n, "switch", g2) != 1 || switched(n, "switch", g1) != 1 {
		t.Errorf("switch log %v: want gen 2 once, then gen 1 once", sw)
	}
	if !linkUp(t, n.netns) || !f.Watch().Online("n1") {
		t.Errorf("after the rollback: link up %v, online %v", linkUp(t, n.netns), f.Watch().Online("n1"))
	}
}

// A node's link is cut while it downloads its new system (the cache
// answers slowly, then into the void) and restored later: the download
// resumes, the node ends on the new generation, activated once.
func TestPartitionDuringFetch(t *testing.T) {
	f := newLANFleet(t)
	g1, g2 := f.Build("n1", 1), f.Build("n1", 2)
	n := f.add("n1", g1, g2)
	f.startAll()
	f.cache.hold()
	defer f.cache.release()
	var out strings.Builder
	cmd := f.labctlAsync(&out, "publish", "--id", "r-pfetch", "--key", f.KeyFile, "--toplevel", "n1="+g2, "--timeout", "150s")
	f.Watch().AwaitState(t, "n1", "r-pfetch", proto.StateFetching, 30*time.Second)
	eventually(t, 30*time.Second, "n1 to ask the cache for the NAR", func() bool { return f.cache.narCount() > 0 })
	f.lan.cut("n1")
	f.cache.release() // the answer goes into the cut link
	eventually(t, 30*time.Second, "the broker to notice n1 is gone", func() bool { return !f.Watch().Online("n1") })
	f.lan.restore("n1")
	if code := exitCode(cmd.Wait()); code != exitSucceeded {
		t.Fatalf("publish exit %d\n%s", code, out.String())
	}
	t.Logf("labctl publish:\n%s", out.String())
	s := f.Watch().AwaitState(t, "n1", "r-pfetch", proto.StateSucceeded, 10*time.Second)
	if n.Current() != g2 || s.AppliedGen != s.Execution.Gen || switched(n, "switch", g2) != 1 || len(n.Switches()) != 1 {
		t.Errorf("profile %s applied %d/%d switches %v", n.Current(), s.AppliedGen, s.Execution.Gen, n.Switches())
	}
}

// The link is cut while the node verifies the new system (a slow check)
// and restored within the confirm deadline: the node confirms, passes and
// keeps the new generation; the controller sees it through.
func TestPartitionDuringVerify(t *testing.T) {
	f := newLANFleet(t)
	g1, g2 := f.Build("n1", 1), f.Build("n1", 2)
	n := f.add("n1", g1, g2)
	n.appendConfig("  - {name: slow, type: command, command: [sleep, \"4\"], timeout: 10s, retries: -1}\n")
	f.startAll()
	var out strings.Builder
	cmd := f.labctlAsync(&out, "publish", "--id", "r-pverify", "--key", f.KeyFile, "--toplevel", "n1="+g2,
		"--confirm-timeout", "60s", "--timeout", "150s")
	f.Watch().AwaitState(t, "n1", "r-pverify", proto.StateVerifying, 60*time.Second)
	f.lan.cut("n1")
	eventually(t, 30*time.Second, "the broker to notice n1 is gone", func() bool { return !f.Watch().Online("n1") })
	f.lan.restore("n1")
	if code := exitCode(cmd.Wait()); code != exitSucceeded {
		t.Fatalf("publish exit %d\n%s", code, out.String())
	}
	t.Logf("labctl publish:\n%s", out.String())
	s := f.Watch().AwaitState(t, "n1", "r-pverify", proto.StateSucceeded, 10*time.Second)
	if n.Current() != g2 || s.AppliedGen != s.Execution.Gen || len(n.Switches()) != 1 || !s.Checks["slow"].OK {
		t.Errorf("profile %s applied %d/%d switches %v checks %+v", n.Current(), s.AppliedGen, s.Execution.Gen, n.Switches(), s.Checks)
	}
}

// labd is SIGKILLed while it downloads its new system and started again:
// it fetches again (the first download's partial result is Nix's
// business) and activates once.
func TestLabdKilledWhileFetching(t *testing.T) {
	f := newLANFleet(t)
	g1, g2 := f.Build("n1", 1), f.Build("n1", 2)
	n := f.add("n1", g1, g2)
	f.startAll()
	f.cache.hold()
	defer f.cache.release()
	if code, _, _ := f.Labctl("publish", "--id", "r-kfetch", "--key", f.KeyFile, "--toplevel", "n1="+g2, "--no-wait"); code != 0 {
		t.Fatalf("publish --no-wait exit %d", code)
	}
	f.Watch().AwaitState(t, "n1", "r-kfetch", proto.StateFetching, 30*time.Second)
	eventually(t, 30*time.Second, "n1 to ask the cache for the NAR", func() bool { return f.cache.narCount() > 0 })
	n.Kill()
	asked := f.cache.narCount()
	n.Start()
	eventually(t, 30*time.Second, "n1 to fetch again after its restart", func() bool { return f.cache.narCount() > asked })
	f.cache.release()
	s := f.Watch().AwaitState(t, "n1", "r-kfetch", proto.StateSucceeded, 60*time.Second)
	if n.Current() != g2 || s.AppliedGen != s.Execution.Gen || len(n.Switches()) != 1 {
		t.Errorf("profile %s applied %d/%d switches %v", n.Current(), s.AppliedGen, s.Execution.Gen, n.Switches())
	}
}

// A whole rolling rollout over bad links: every node's link drops 10% of
// packets each way (nft), is limited to 1 Mbit/s (tbf), and the hub adds
// 50 ms each way to every chunk (our fault proxy). Every node ends on the
// new generation, activated once.
func TestLossySlowLinksRollout(t *testing.T) {
	requireRoot(t, "nft", "tc")
	f := newLANFleet(t)
	g2 := map[string]string{}
	for _, name := range []string{"n1", "n2", "n3"} {
		g2[name] = f.Build(name, 2)
		f.add(name, f.Build(name, 1), g2[name])
	}
	const loss = `table inet chaos {
  chain in  { type filter hook input  priority 0; policy accept; numgen random mod 100 < 10 counter drop; }
  chain out { type filter hook output priority 0; policy accept; numgen random mod 100 < 10 counter drop; }
}
`
	// The nodes connect first (a connect under 19% round-trip loss can
	// need several 10 s attempts); the rollout runs over the bad links.
	f.startAll()
	for _, n := range f.nodes {
		f.lan.runInput(n.netns, loss, "nft", "-f", "-")
		f.lan.run(n.netns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "1mbit", "burst", "16kb", "latency", "400ms")
	}
	f.proxy.SetDelay(50 * time.Millisecond)
	args := []string{"publish", "--id", "r-lossy", "--key", f.KeyFile, "--strategy", "rolling", "--batch", "1", "--timeout", "300s"}
	for _, n := range f.nodes {
		args = append(args, "--toplevel", n.Name+"="+g2[n.Name])
	}
	if code, out, _ := f.Labctl(args...); code != exitSucceeded {
		t.Fatalf("publish over lossy links exit %d\n%s", code, out)
	}
	for _, n := range f.nodes {
		s := f.Watch().AwaitState(t, n.Name, "r-lossy", proto.StateSucceeded, 30*time.Second)
		if n.Current() != g2[n.Name] || s.AppliedGen != s.Execution.Gen || switched(n, "switch", g2[n.Name]) != 1 || len(n.Switches()) != 1 {
			t.Errorf("%s: profile %s applied %d/%d switches %v", n.Name, n.Current(), s.AppliedGen, s.Execution.Gen, n.Switches())
		}
	}
	// The loss was real: nft dropped packets of every node.
	for _, n := range f.nodes {
		out, err := exec.Command("ip", "netns", "exec", n.netns, "nft", "list", "ruleset").Output()
		if err != nil {
			t.Fatalf("%s: nft list ruleset: %v", n.Name, err)
		}
		if dropped := droppedPackets(string(out)); dropped == 0 {
			t.Errorf("%s: nft dropped no packet during the rollout:\n%s", n.Name, out)
		}
	}
}

// droppedPackets sums the "counter packets N" of nft's ruleset listing.
func droppedPackets(ruleset string) int {
	total := 0
	for _, f := range strings.Split(ruleset, "counter packets ")[1:] {
		n, _ := strconv.Atoi(strings.Fields(f)[0])
		total += n
	}
	return total
}
