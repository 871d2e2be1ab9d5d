package controller

import (
	"fmt"
	"testing"
)

// BenchmarkPlanWaves plans 10,000 targets with dependencies (every 100th
// machine depends on the one before it) in rolling waves of 5%.
//
//	go test ./controller -run '^$' -bench PlanWaves -benchmem
func BenchmarkPlanWaves(b *testing.B) {
	ms := make([]Machine, 10_000)
	for i := range ms {
		ms[i] = Machine{Name: fmt.Sprintf("m%05d", i), RebootOrder: i % 7}
		if i%100 == 99 {
			ms[i].Dependencies = []string{fmt.Sprintf("m%05d", i-1)}
		}
	}
	st := Strategy{Kind: StrategyRolling, Batch: Size{Percent: 5}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := PlanWaves(ms, st); err != nil {
			b.Fatal(err)
		}
	}
}
