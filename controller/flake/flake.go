package flake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// Machine is one entry of the flake's nixosConfigurations (or of
// Nix.Configurations): its lab.machine options and
// the system it evaluates to.
type Machine struct {
	Name           string   `json:"name"`
	Role           string   `json:"role,omitempty"`
	Groups         []string `json:"groups"`
	RebootOrder    int      `json:"reboot_order"`
	Dependencies   []string `json:"dependencies"`
	RebootDelay    string   `json:"reboot_delay,omitempty"`
	Criticality    string   `json:"criticality,omitempty"`
	DeployStrategy string   `json:"deploy_strategy,omitempty"`
	// Toplevel is the store path of config.system.build.toplevel; empty
	// when the machine's evaluation failed (Error says why).
	Toplevel string `json:"toplevel,omitempty"`
	// Error is the machine's evaluation error as Nix printed it.
	Error string `json:"error,omitempty"`
}

// ErrEval wraps a failed evaluation of the whole flake; the message is
// what Nix printed.
var ErrEval = errors.New("nix evaluation failed")

// Nix runs the nix command. The zero value uses `nix` from $PATH.
type Nix struct {
	Bin    string   // default "nix"
	Env    []string // added to the environment (NIX_CONFIG, ...)
	Logger *slog.Logger
	// Configurations is the attribute path of the flake whose entries
	// are the machines (ParseAttrPath; "": DefaultConfigurations), e.g.
	// clan.nixosConfigurations for a fleet that flake-parts or clan assemble.
	Configurations string
	// Run executes one command; default os/exec. Tests and dry runs
	// replace it.
	Run func(ctx context.Context, name string, args, env []string) (stdout, stderr []byte, err error)
}

// features enables flakes on a Nix that does not by default (Debian's 2.8).
var features = []string{"--extra-experimental-features", "nix-command flakes"}

// machineMeta is one configuration's metadata and system, as Nix sees it.
const machineMeta = `c: let
    m = c.config.lab.machine or {};
    o = m.orchestration or {};
  in {
    role = m.role or "";
    groups = m.groups or [];
    rebootOrder = m.rebootOrder or 0;
    dependencies = m.dependencies or [];
    rebootDelay = o.rebootDelay or "";
    criticality = o.criticalityLevel or "";
    deployStrategy = o.deployStrategy or "";
    toplevel = c.config.system.build.toplevel.outPath;
  }`

// evalApply maps every configuration to its metadata. A machine whose
// metadata or system throws is kept, marked failed, so that one broken
// machine does not hide the others (errors that tryEval cannot catch
// fail the whole evaluation, with Nix's message).
const evalApply = `cs: builtins.mapAttrs (name: c:
  let
    meta = (` + machineMeta + `) c;
    r = builtins.tryEval (builtins.deepSeq meta meta);
  in if r.success then r.value else { failed = true; }) cs`

type evalRecord struct {
	Failed         bool     `json:"failed"`
	Role           string   `json:"role"`
	Groups         []string `json:"groups"`
	RebootOrder    int      `json:"rebootOrder"`
	Dependencies   []string `json:"dependencies"`
	RebootDelay    string   `json:"rebootDelay"`
	Criticality    string   `json:"criticality"`
	DeployStrategy string   `json:"deployStrategy"`
	Toplevel       string   `json:"toplevel"`
}

// Inventory evaluates every machine of the flake in one `nix eval` and
// returns them by name, with the time the evaluation took. A machine
// whose evaluation failed carries Nix's error (found by evaluating that
// machine alone once more).
func (n Nix) Inventory(ctx context.Context, ref string) ([]Machine, time.Duration, error) {
	attr, err := n.configurations()
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	out, stderr, err := n.run(ctx, append(features, "eval", "--json", ref+"#"+attr, "--apply", evalApply))
	took := time.Since(start)
	if err != nil {
		return nil, took, fmt.Errorf("%w: nix eval %s#%s:\n%s", ErrEval, ref, attr, nixMessage(stderr, err))
	}
	var recs map[string]evalRecord
	if err := json.Unmarshal(out, &recs); err != nil {
		return nil, took, fmt.Errorf("%w: nix eval printed no JSON object: %v", ErrEval, err)
	}
	ms := make([]Machine, 0, len(recs))
	for name, r := range recs {
		m := Machine{Name: name, Role: r.Role, Groups: r.Groups, RebootOrder: r.RebootOrder, Dependencies: r.Dependencies,
			RebootDelay: r.RebootDelay, Criticality: r.Criticality, DeployStrategy: r.DeployStrategy, Toplevel: r.Toplevel}
		switch {
		case proto.ValidID(name) != nil:
			m.Error = fmt.Sprintf("%q cannot be a lab node name: %v", name, proto.ValidID(name))
		case r.Failed:
			m.Error = n.machineError(ctx, ref, name)
		case proto.ValidStorePath(r.Toplevel) != nil:
			m.Error = fmt.Sprintf("system.build.toplevel is %q, not a store path", r.Toplevel)
		}
		if m.Error != "" {
			m.Toplevel = ""
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	return ms, took, nil
}

// machineError evaluates one failed machine alone, for Nix's message.
func (n Nix) machineError(ctx context.Context, ref, name string) string {
	cs, _ := n.configurations() // Inventory checked it
	attr := fmt.Sprintf("%s#%s.%q", ref, cs, name)
	_, stderr, err := n.run(ctx, append(features, "eval", "--json", attr, "--apply", machineMeta))
	if err == nil {
		return "it failed to evaluate with the others but evaluates alone"
	}
	return nixMessage(stderr, err)
}

// Build builds the systems of the named machines in ONE `nix build` and
// returns name → store path. The paths must be those the inventory
// evaluated: anything else means the flake changed in between.
func (n Nix) Build(ctx context.Context, ref string, machines []Machine) (map[string]string, error) {
	if len(machines) == 0 {
		return map[string]string{}, nil
	}
	cs, err := n.configurations()
	if err != nil {
		return nil, err
	}
	args := append(append([]string{}, features...), "build", "--json", "--no-link")
	want := map[string]string{} // store path → machine
	for _, m := range machines {
		args = append(args, fmt.Sprintf("%s#%s.%q.config.system.build.toplevel", ref, cs, m.Name))
		want[m.Toplevel] = m.Name
	}
	out, stderr, err := n.run(ctx, args)
	if err != nil {
		return nil, fmt.Errorf("nix build of %d systems:\n%s", len(machines), nixMessage(stderr, err))
	}
	var results []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal(out, &results); err != nil {
		return nil, fmt.Errorf("nix build printed no JSON: %v", err)
	}
	built := map[string]string{}
	for _, r := range results {
		if name, ok := want[r.Outputs["out"]]; ok {
			built[name] = r.Outputs["out"]
		}
	}
	for _, m := range machines {
		if built[m.Name] == "" {
			return nil, fmt.Errorf("nix build did not produce %s for %s (did the flake change since it was evaluated?)", m.Toplevel, m.Name)
		}
	}
	return built, nil
}

// Copy copies the closures of paths to a binary cache (`nix copy --to`),
// from which the machines substitute.
func (n Nix) Copy(ctx context.Context, to string, paths []string) error {
	if len(paths) == 0 {
		return nil
	}
	args := append(append([]string{}, features...), append([]string{"copy", "--to", to}, paths...)...)
	if _, stderr, err := n.run(ctx, args); err != nil {
		return fmt.Errorf("nix copy --to %s:\n%s", to, nixMessage(stderr, err))
	}
	return nil
}

// configurations is the checked attribute path of the machines.
func (n Nix) configurations() (string, error) {
	if n.Configurations == "" {
		return DefaultConfigurations, nil
	}
	return ParseAttrPath(n.Configurations)
}

func (n Nix) run(ctx context.Context, args []string) ([]byte, []byte, error) {
	bin := n.Bin
	if bin == "" {
		bin = "nix"
	}
	run := n.Run
	if run == nil {
		run = execRun
	}
	start := time.Now()
	out, stderr, err := run(ctx, bin, args, n.Env)
	if n.Logger != nil {
		n.Logger.Debug("nix", "args", strings.Join(args[len(features):], " "), "elapsed", time.Since(start), "err", err)
	}
	return out, stderr, err
}

func execRun(ctx context.Context, name string, args, env []string) ([]byte, []byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.Bytes(), stderr.Bytes(), err
}

// nixMessage is what Nix printed, without its progress noise.
func nixMessage(stderr []byte, err error) string {
	var keep []string
	for _, line := range strings.Split(strings.TrimRight(string(stderr), "\n"), "\n") {
		if strings.HasPrefix(line, "warning: error: unable to download") || strings.HasPrefix(line, "warning: unable to download") {
			continue
		}
		keep = append(keep, line)
	}
	msg := strings.TrimSpace(strings.Join(keep, "\n"))
	if msg == "" {
		msg = err.Error()
	}
	return msg
}
