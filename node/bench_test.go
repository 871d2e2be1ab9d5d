package node

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/testbroker"
	"github.com/lab-fleet/lab/node/nixsys/nixsystest"
	"github.com/lab-fleet/lab/proto"
)

// BenchmarkRollout is one rollout on one node, everything but Nix: the
// signed Desired arrives over a real broker, the daemon verifies it, runs
// the state machine, persists each transition, publishes status and
// events, confirms the broker after the (instant) activation, and the
// subscriber sees `succeeded`. Allocations and time are labd's own cost
// per rollout, outside Nix:
//
//	go test ./node -run '^$' -bench Rollout -benchmem -cpuprofile cpu.out -memprofile mem.out
func BenchmarkRollout(b *testing.B) {
	br := testbroker.Start(b)
	key, err := proto.GenerateKey("bench")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	bootID := filepath.Join(dir, "boot_id")
	if err := os.WriteFile(bootID, []byte("boot\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	systems := []string{"/nix/store/00000000000000000000000000000001-nixos-system-n1-1", "/nix/store/00000000000000000000000000000002-nixos-system-n1-2"}
	fake := nixsystest.New()
	fake.SetCurrent(systems[0])
	d, err := New(Config{Name: "n1", Groups: []string{"web"}, Broker: []string{br.URL()}, StateDir: filepath.Join(dir, "state"),
		TrustedKeys: []string{key.Public().String()}, BootIDFile: bootID, RebootCommand: []string{"true"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, fake)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	succeeded := make(chan uint64, 16)
	tp := proto.DefaultTopics
	c, err := bus.Dial(context.Background(), bus.Config{URLs: []string{br.URL()}, ClientID: "bench-ctl", CleanStart: true,
		OnMessage: func(m bus.Message) {
			var s proto.NodeStatus
			if proto.Decode(m.Payload, &s) == nil && s.Execution.State == proto.StateSucceeded {
				succeeded <- s.Execution.Gen
			}
		}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(context.Background())
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := c.AwaitConnection(wctx); err != nil {
		b.Fatal(err)
	}
	if err := c.Subscribe(wctx, tp.NodeStatus("n1")); err != nil {
		b.Fatal(err)
	}
	gen := uint64(time.Now().UnixMilli())
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		gen++
		desired := &proto.Desired{Node: "n1", Rollout: "r-bench", Gen: gen, Toplevel: systems[(i+1)%2], Action: proto.ActionSwitch}
		desired.Stamp("bench", time.Now())
		if err := proto.Sign(desired, key); err != nil {
			b.Fatal(err)
		}
		payload, err := proto.Seal(desired)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Publish(context.Background(), tp.NodeDesired("n1"), payload, true); err != nil {
			b.Fatal(err)
		}
		for got := uint64(0); got != gen; {
			select {
			case got = <-succeeded:
			case <-time.After(10 * time.Second):
				b.Fatalf("no succeeded status for gen %d", gen)
			}
		}
	}
}
