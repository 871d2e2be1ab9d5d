package controller

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Strategies of a rollout.
const (
	StrategyAll     = "all"     // every target at once (dependency levels still wait for each other)
	StrategyRolling = "rolling" // batches of Strategy.Batch
	StrategyCanary  = "canary"  // Strategy.Canary first, then the rest (in batches when Batch is set)
)

// ErrDependencyCycle is returned by PlanWaves when targets depend on each
// other in a circle; the error names the cycle.
var ErrDependencyCycle = errors.New("dependency cycle")

// Size is a count or a percentage of a total: "3" or "25%".
type Size struct {
	N       int
	Percent float64 // used when > 0
}

// ParseSize parses "N" (N ≥ 0) or "P%" (0 < P ≤ 100).
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f <= 0 || f > 100 || math.IsNaN(f) {
			return Size{}, fmt.Errorf("%q: want a percentage in (0, 100], like 25%%", s)
		}
		return Size{Percent: f}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return Size{}, fmt.Errorf("%q: want a count like 3 or a percentage like 25%%", s)
	}
	return Size{N: n}, nil
}

// Of resolves the size against a total: a percentage rounds up, so that
// 10% of 3 machines is 1, not 0.
func (s Size) Of(total int) int {
	if s.Percent > 0 {
		return int(math.Ceil(s.Percent * float64(total) / 100))
	}
	return s.N
}

// IsZero reports whether the size is unset.
func (s Size) IsZero() bool { return s.N == 0 && s.Percent == 0 }

func (s Size) String() string {
	if s.Percent > 0 {
		return strconv.FormatFloat(s.Percent, 'f', -1, 64) + "%"
	}
	return strconv.Itoa(s.N)
}

// Strategy says how targets are split into waves.
type Strategy struct {
	Kind   string // StrategyAll (default), StrategyRolling, StrategyCanary
	Batch  Size   // wave size for rolling; for canary, the size of the waves after the canaries
	Canary Size   // canary wave size (default 1)
}

// Machine is what the planner knows of one target.
type Machine struct {
	Name         string
	RebootOrder  int      // lower goes first
	Dependencies []string // machines that must be healthy first
}

// PlanWaves splits machines into waves. Order: dependency level first (a
// machine comes after every target it depends on; dependencies on machines
// that are not targets are already satisfied), then RebootOrder, then name.
// A machine is never in the same wave as one it depends on. It is pure.
func PlanWaves(machines []Machine, st Strategy) ([][]string, error) {
	if len(machines) == 0 {
		return nil, nil
	}
	level, err := levels(machines)
	if err != nil {
		return nil, err
	}
	order := slices.Clone(machines)
	slices.SortFunc(order, func(a, b Machine) int {
		if c := level[a.Name] - level[b.Name]; c != 0 {
			return c
		}
		if c := a.RebootOrder - b.RebootOrder; c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	total := len(order)
	var caps []int // size of wave i; the last repeats
	switch st.Kind {
	case "", StrategyAll:
		caps = []int{total}
	case StrategyRolling:
		b := st.Batch.Of(total)
		if b < 1 {
			return nil, fieldErr(FieldBatch, "%w: %s must be at least 1 machine for rolling (got %s of %d)", ErrInvalidPlan, FieldBatch, st.Batch, total)
		}
		caps = []int{b}
	case StrategyCanary:
		c := 1
		if !st.Canary.IsZero() {
			c = st.Canary.Of(total)
		}
		if c < 1 {
			return nil, fieldErr(FieldCanary, "%w: %s must select at least 1 machine (got %s of %d)", ErrInvalidPlan, FieldCanary, st.Canary, total)
		}
		rest := total
		if !st.Batch.IsZero() {
			if rest = st.Batch.Of(total); rest < 1 {
				return nil, fieldErr(FieldBatch, "%w: %s must select at least 1 machine (got %s of %d)", ErrInvalidPlan, FieldBatch, st.Batch, total)
			}
		}
		caps = []int{c, rest}
	default:
		return nil, fmt.Errorf("%w: strategy %q: want all, rolling or canary", ErrInvalidPlan, st.Kind)
	}
	var waves [][]string
	var cur []string
	inCur := map[string]bool{}
	limit := func() int { return caps[min(len(waves), len(caps)-1)] }
	closeWave := func() {
		if len(cur) > 0 {
			waves = append(waves, cur)
			cur, inCur = nil, map[string]bool{}
		}
	}
	for _, m := range order {
		dependsOnCur := slices.ContainsFunc(m.Dependencies, func(d string) bool { return inCur[d] })
		if len(cur) >= limit() || dependsOnCur {
			closeWave()
		}
		cur = append(cur, m.Name)
		inCur[m.Name] = true
	}
	closeWave()
	return waves, nil
}

// levels computes each machine's dependency level among the targets, or
// the first cycle found.
func levels(machines []Machine) (map[string]int, error) {
	deps := make(map[string][]string, len(machines))
	for _, m := range machines {
		if _, dup := deps[m.Name]; dup {
			return nil, fmt.Errorf("%w: machine %q listed twice", ErrInvalidPlan, m.Name)
		}
		deps[m.Name] = m.Dependencies
	}
	const (
		unvisited = iota
		visiting
		done
	)
	mark := map[string]int{}
	level := map[string]int{}
	var path []string
	var visit func(n string) error
	visit = func(n string) error {
		switch mark[n] {
		case done:
			return nil
		case visiting:
			i := slices.Index(path, n)
			return fmt.Errorf("%w: %s", ErrDependencyCycle, strings.Join(append(slices.Clone(path[i:]), n), " → "))
		}
		mark[n] = visiting
		path = append(path, n)
		lv := 0
		for _, d := range deps[n] {
			if _, isTarget := deps[d]; !isTarget {
				continue // not in this rollout: already in place
			}
			if err := visit(d); err != nil {
				return err
			}
			lv = max(lv, level[d]+1)
		}
		path = path[:len(path)-1]
		mark[n], level[n] = done, lv
		return nil
	}
	names := make([]string, 0, len(deps))
	for n := range deps {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return level, nil
}
