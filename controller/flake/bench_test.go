package flake

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkEvaluation compares the inventory of a 200-machine flake in ONE
// nix eval with one evaluation per machine, the way a per-machine tool
// works. Run:
//
//	go test ./controller/flake -run '^$' -bench Evaluation -benchtime 5x
func BenchmarkEvaluation(b *testing.B) {
	ref := benchFlake(b, 200)
	n, _ := testNixB(b)
	ctx := context.Background()
	b.Run("one-eval-200", func(b *testing.B) {
		for b.Loop() {
			ms, _, err := n.Inventory(ctx, ref)
			if err != nil || len(ms) != 201 {
				b.Fatalf("%d machines, %v", len(ms), err)
			}
		}
	})
	b.Run("per-machine-200", func(b *testing.B) {
		for b.Loop() {
			for i := range 200 {
				attr := fmt.Sprintf("%s#nixosConfigurations.%q", ref, fmt.Sprintf("m%03d", i))
				if _, stderr, err := n.run(ctx, append(features, "eval", "--json", attr, "--apply", machineMeta)); err != nil {
					b.Fatalf("%v: %s", err, stderr)
				}
			}
		}
	})
}
