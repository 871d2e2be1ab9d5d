package controller

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func ms(names ...string) []Machine {
	out := make([]Machine, len(names))
	for i, n := range names {
		out[i] = Machine{Name: n}
	}
	return out
}

func TestPlanWaves(t *testing.T) {
	many := func(n int) []Machine {
		out := make([]Machine, n)
		for i := range out {
			out[i] = Machine{Name: fmt.Sprintf("m%02d", i)}
		}
		return out
	}
	chain := []Machine{{Name: "web", Dependencies: []string{"db"}}, {Name: "db", Dependencies: []string{"storage"}}, {Name: "storage"}, {Name: "laptop"}}
	ordered := []Machine{{Name: "a", RebootOrder: 3}, {Name: "b", RebootOrder: 1}, {Name: "c", RebootOrder: 2}, {Name: "d"}}
	for _, tc := range []struct {
		name string
		in   []Machine
		st   Strategy
		want [][]string
	}{
		{"all in one wave, by name", ms("c", "a", "b"), Strategy{}, [][]string{{"a", "b", "c"}}},
		{"all: reboot order then name", ordered, Strategy{Kind: StrategyAll}, [][]string{{"d", "b", "c", "a"}}},
		{"all: dependency levels wait", chain, Strategy{}, [][]string{{"laptop", "storage"}, {"db"}, {"web"}}},
		{"dependency outside the targets is satisfied", []Machine{{Name: "web", Dependencies: []string{"db"}}}, Strategy{}, [][]string{{"web"}}},
		{"rolling by count", ms("a", "b", "c", "d", "e"), Strategy{Kind: StrategyRolling, Batch: Size{N: 2}}, [][]string{{"a", "b"}, {"c", "d"}, {"e"}}},
		{"rolling 50% of 3 rounds up to 2", ms("a", "b", "c"), Strategy{Kind: StrategyRolling, Batch: Size{Percent: 50}}, [][]string{{"a", "b"}, {"c"}}},
		{"rolling 10% of 3 is 1, never 0", ms("a", "b", "c"), Strategy{Kind: StrategyRolling, Batch: Size{Percent: 10}}, [][]string{{"a"}, {"b"}, {"c"}}},
		{"rolling 100%", ms("a", "b", "c"), Strategy{Kind: StrategyRolling, Batch: Size{Percent: 100}}, [][]string{{"a", "b", "c"}}},
		{"rolling batch larger than the fleet", ms("a", "b"), Strategy{Kind: StrategyRolling, Batch: Size{N: 10}}, [][]string{{"a", "b"}}},
		{"rolling splits a batch at a dependency", chain, Strategy{Kind: StrategyRolling, Batch: Size{N: 3}}, [][]string{{"laptop", "storage"}, {"db"}, {"web"}}},
		{"canary 1 then the rest", ms("a", "b", "c", "d"), Strategy{Kind: StrategyCanary}, [][]string{{"a"}, {"b", "c", "d"}}},
		{"canary 2 then batches of 1", ms("a", "b", "c", "d"), Strategy{Kind: StrategyCanary, Canary: Size{N: 2}, Batch: Size{N: 1}}, [][]string{{"a", "b"}, {"c"}, {"d"}}},
		{"canary 25% of 20 then 50%", many(20), Strategy{Kind: StrategyCanary, Canary: Size{Percent: 25}, Batch: Size{Percent: 50}},
			[][]string{{"m00", "m01", "m02", "m03", "m04"}, {"m05", "m06", "m07", "m08", "m09", "m10", "m11", "m12", "m13", "m14"}, {"m15", "m16", "m17", "m18", "m19"}}},
		{"canary larger than the fleet", ms("a", "b"), Strategy{Kind: StrategyCanary, Canary: Size{N: 5}}, [][]string{{"a", "b"}}},
		{"canary follows reboot order", ordered, Strategy{Kind: StrategyCanary}, [][]string{{"d"}, {"b", "c", "a"}}},
		{"one machine", ms("solo"), Strategy{Kind: StrategyCanary}, [][]string{{"solo"}}},
		{"nothing", nil, Strategy{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PlanWaves(tc.in, tc.st)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			// Invariant: every machine exactly once, after its dependencies.
			wave := map[string]int{}
			for i, w := range got {
				for _, n := range w {
					if _, dup := wave[n]; dup {
						t.Fatalf("%s planned twice", n)
					}
					wave[n] = i
				}
			}
			for _, m := range tc.in {
				for _, d := range m.Dependencies {
					if dw, ok := wave[d]; ok && dw >= wave[m.Name] {
						t.Errorf("%s (wave %d) not after its dependency %s (wave %d)", m.Name, wave[m.Name], d, dw)
					}
				}
			}
		})
	}
}

func TestPlanWavesRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []Machine
		st   Strategy
		want error
		msg  string
	}{
		{"cycle", []Machine{{Name: "a", Dependencies: []string{"b"}}, {Name: "b", Dependencies: []string{"c"}}, {Name: "c", Dependencies: []string{"a"}}}, Strategy{}, ErrDependencyCycle, "a → b → c → a"},
		{"self", []Machine{{Name: "a", Dependencies: []string{"a"}}}, Strategy{}, ErrDependencyCycle, "a → a"},
		{"rolling without batch", ms("a"), Strategy{Kind: StrategyRolling}, ErrInvalidPlan, "batch size must be at least 1 machine"},
		{"unknown strategy", ms("a"), Strategy{Kind: "yolo"}, ErrInvalidPlan, "yolo"},
		{"duplicate", ms("a", "a"), Strategy{}, ErrInvalidPlan, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := PlanWaves(tc.in, tc.st)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v naming %q", err, tc.want, tc.msg)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{"3": {N: 3}, "0": {N: 0}, "25%": {Percent: 25}, " 100% ": {Percent: 100}, "12.5%": {Percent: 12.5}} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "0%", "101%", "x", "5%%", "NaN%", "1.5"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
	if got := (Size{Percent: 33}).Of(10); got != 4 {
		t.Errorf("33%% of 10 = %d, want 4", got)
	}
}

func TestNeedResync(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, c := range []struct {
		name                string
		lastMsg, lastResync time.Time
		now                 time.Time
		want                bool
	}{
		{"news a second ago", t0, t0.Add(-time.Minute), t0.Add(time.Second), false},
		{"quiet, never resynced recently", t0, t0, t0.Add(resyncQuiet), true},
		{"quiet, but just resynced", t0, t0.Add(resyncQuiet), t0.Add(resyncQuiet + time.Second), false},
		{"quiet again after a resync", t0, t0.Add(resyncQuiet), t0.Add(2 * resyncQuiet), true},
	} {
		if got := needResync(c.lastMsg, c.lastResync, c.now); got != c.want {
			t.Errorf("%s: needResync = %v, want %v", c.name, got, c.want)
		}
	}
}
