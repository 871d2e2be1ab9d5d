package integration

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// The soak runs short by default (CI) and longer by flag:
//
//	go test ./integration -run TestSoak -soak.nodes 50 -soak.rollouts 30 -timeout 60m
var (
	soakNodes    = flag.Int("soak.nodes", 6, "TestSoak: number of labd processes")
	soakRollouts = flag.Int("soak.rollouts", 4, "TestSoak: number of rollouts")
	soakSeed     = flag.Uint64("soak.seed", 0, "TestSoak: random seed (0: from the clock; the seed is logged)")
)

const soakNix = `# every node's system of one generation, in one nix-build
{ names, gen, failHealth ? [], failSwitch ? [] }:
builtins.listToAttrs (map (n: { name = n; value = import ./fake-system.nix {
  name = n; inherit gen;
  failHealth = builtins.elem n failHealth;
  failSwitch = builtins.elem n failSwitch;
}; }) names)
`

// buildGen builds generation gen of every node in one nix-build; the
// named nodes get a system that fails its health check or its switch.
func (e *Env) buildGen(names []string, gen int, failHealth, failSwitch []string) map[string]string {
	e.t.Helper()
	file := filepath.Join(e.Dir, "soak.nix")
	if err := os.WriteFile(file, []byte(soakNix), 0o644); err != nil {
		e.t.Fatal(err)
	}
	list := func(xs []string) string {
		q := make([]string, len(xs))
		for i, x := range xs {
			q[i] = strconv.Quote(x)
		}
		return "[" + strings.Join(q, " ") + "]"
	}
	out, err := e.command("nix-build", file, "--no-out-link", "--arg", "names", list(names), "--arg", "gen", strconv.Itoa(gen),
		"--arg", "failHealth", list(failHealth), "--arg", "failSwitch", list(failSwitch)).Output()
	if err != nil {
		e.t.Fatalf("nix-build gen %d: %v\n%s", gen, err, stderrOf(err))
	}
	paths := map[string]string{}
	for _, p := range strings.Fields(string(out)) {
		for _, n := range names {
			if strings.HasSuffix(p, fmt.Sprintf("-nixos-system-%s-%d", n, gen)) {
				paths[n] = p
			}
		}
	}
	if len(paths) != len(names) {
		e.t.Fatalf("nix-build gen %d printed %d systems for %d nodes:\n%s", gen, len(paths), len(names), out)
	}
	return paths
}

// rssKB is a process's resident memory in KiB.
func rssKB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// TestSoak runs rollout after rollout over a fleet in which some new
// systems are broken (health or switch) and random labd processes are
// SIGKILLed and restarted mid-rollout. After every rollout it checks the
// invariants: the rollout ended (not stuck); every node is on the system
// it should be on — the new one if it was good, its previous one if not —
// and its status says so; no generation was activated twice; and the
// broker's memory stays flat.
func TestSoak(t *testing.T) {
	seed := *soakSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("soak: %d nodes, %d rollouts, seed %d (rerun with -soak.seed %d)", *soakNodes, *soakRollouts, seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x1ab))
	e := NewEnv(t)
	e.StartBroker()
	names := make([]string, *soakNodes)
	for i := range names {
		names[i] = fmt.Sprintf("s%03d", i+1)
	}
	current := e.buildGen(names, 1, nil, nil)
	nodes := map[string]*Node{}
	var all []*Node
	for _, name := range names {
		n := e.NewNode(name, []string{"soak"}, current[name])
		nodes[name] = n
		all = append(all, n)
		n.Start()
	}
	e.DumpOnFailure(all...)
	for _, n := range all {
		eventually(t, 60*time.Second, n.Name+" online", func() bool { return e.Watch().Online(n.Name) })
	}
	e.mu.Lock()
	brokerPid := e.broker.Process.Pid
	e.mu.Unlock()
	var rss []int
	report := []string{"rollout  strategy  broken  restarted  exit  took    broker-rss"}
	for r := 1; r <= *soakRollouts; r++ {
		gen := r + 1
		id := fmt.Sprintf("soak-%02d", r)
		// About one node in ten gets a broken system.
		var failHealth, failSwitch []string
		for _, name := range names {
			switch x := rng.IntN(20); {
			case x == 0:
				failHealth = append(failHealth, name)
			case x == 1:
				failSwitch = append(failSwitch, name)
			}
		}
		next := e.buildGen(names, gen, failHealth, failSwitch)
		broken := append(slices.Clone(failHealth), failSwitch...)
		strategy := []string{"--strategy", "all"}
		if rng.IntN(2) == 0 {
			strategy = []string{"--strategy", "rolling", "--batch", "34%"}
		}
		args := append([]string{"publish", "--id", id, "--key", e.KeyFile, "--max-failures", "100%", "--timeout", "300s"}, strategy...)
		for _, name := range names {
			args = append(args, "--toplevel", name+"="+next[name])
		}
		start := time.Now()
		var out strings.Builder
		cmd := e.labctlAsync(&out, args...)
		// Restart one or two random nodes at random moments of the rollout.
		var restarted []string
		for k := 1 + rng.IntN(2); k > 0; k-- {
			time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
			n := all[rng.IntN(len(all))]
			n.Kill()
			n.Start()
			restarted = append(restarted, n.Name)
		}
		code := exitCode(cmd.Wait())
		took := time.Since(start)
		if code != exitSucceeded && code != exitFailed && code != exitRolledBack {
			t.Fatalf("%s: publish exit %d (stuck or broken), restarted %v, broken %v\n%s", id, code, restarted, broken, out.String())
		}
		for _, name := range names {
			n := nodes[name]
			var s proto.NodeStatus
			eventually(t, 60*time.Second, name+" to end "+id, func() bool {
				s, _ = e.Watch().Status(name)
				return s.Execution.Rollout == id && s.Execution.State.Terminal()
			})
			bad := slices.Contains(broken, name)
			want := next[name]
			if bad {
				want = current[name]
			}
			switch {
			case bad && s.Execution.State == proto.StateSucceeded:
				t.Errorf("%s: %s succeeded with a broken system", id, name)
			case !bad && s.Execution.State != proto.StateSucceeded:
				t.Errorf("%s: %s ended %s with a good system: %s", id, name, s.Execution.State, s.Execution.Error)
			}
			if n.Current() != want || s.Current != n.Current() {
				t.Errorf("%s: %s is on %s, its status says %s, want %s", id, name, n.Current(), s.Current, want)
			}
			if s.Execution.State == proto.StateSucceeded && s.AppliedGen != s.Execution.Gen {
				t.Errorf("%s: %s succeeded but applied gen %d != %d", id, name, s.AppliedGen, s.Execution.Gen)
			}
			if c := switched(n, "switch", next[name]); c != 1 {
				t.Errorf("%s: %s activated gen %d %d times (want once): %v", id, name, gen, c, n.Switches())
			}
			if !bad {
				current[name] = next[name]
			}
		}
		rss = append(rss, rssKB(brokerPid))
		report = append(report, fmt.Sprintf("%-8s %-9s %-7d %-10d %-5d %-7s %d KiB", id, strategy[1], len(broken), len(restarted), code, took.Round(100*time.Millisecond), rss[len(rss)-1]))
		if t.Failed() {
			t.Logf("labctl publish %s:\n%s", id, out.String())
			break
		}
	}
	t.Logf("soak results:\n%s", strings.Join(report, "\n"))
	// Every rollout record ended.
	code, out, _ := e.Labctl("rollout", "list", "--json")
	var recs []struct {
		Plan  struct{ ID string }
		State string
	}
	if err := json.Unmarshal([]byte(out), &recs); code != 0 || err != nil {
		t.Fatalf("rollout list: exit %d, %v", code, err)
	}
	for _, r := range recs {
		if r.State == string(proto.RolloutRunning) {
			t.Errorf("rollout %s still running in its record", r.Plan.ID)
		}
	}
	// Flat memory: after the first rollout (warm-up), the broker grows
	// by less than half and 16 MiB.
	if len(rss) >= 2 && rss[0] > 0 {
		if last, base := rss[len(rss)-1], rss[0]; last > base*3/2+16<<10 {
			t.Errorf("broker RSS grew from %d KiB to %d KiB over %d rollouts", base, last, len(rss))
		}
	}
}
