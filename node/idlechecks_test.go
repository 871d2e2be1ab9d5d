package node

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/clock"
	"github.com/lab-fleet/lab/node/health"
	"github.com/lab-fleet/lab/node/nixsys/nixsystest"
	"github.com/lab-fleet/lab/proto"
)

// Between rollouts labd runs its checks every check_interval and
// publishes them: a machine that turns unhealthy says so, and says so
// again when it recovers.
func TestChecksRunBetweenRollouts(t *testing.T) {
	key, err := proto.GenerateKey("test")
	if err != nil {
		t.Fatal(err)
	}
	flag := filepath.Join(t.TempDir(), "healthy")
	if err := os.WriteFile(flag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Now())
	_, statuses, stop := testNodeWith(t, nixsystest.New(), key, nil, func(c *Config) {
		c.Clock, c.CheckInterval = clk, time.Minute
		c.Checks = []health.Check{{Name: "flag", Type: "command", Command: []string{"test", "-e", flag}}}
	})
	defer stop()
	check := func(want bool, what string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case s := <-statuses:
				if r, ok := s.Checks["flag"]; ok && r.At != 0 && r.OK == want {
					return
				}
			case <-time.After(20 * time.Millisecond):
				clk.Advance(time.Second) // a failing check retries on the same clock
			case <-deadline:
				t.Fatalf("%s: no status with check flag ok=%v", what, want)
			}
		}
	}
	// Before the interval nothing has run.
	select {
	case s := <-statuses:
		if r := s.Checks["flag"]; r.At != 0 {
			t.Fatalf("the check ran before its interval: %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no status at start")
	}
	advance := func() {
		// The ticker may not have armed its timer yet: advance until the
		// check has run (a second at a time).
		for i := 0; i < 60; i++ {
			clk.Advance(time.Second)
		}
	}
	advance()
	check(true, "first interval")
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	advance()
	check(false, "the flag gone")
	if err := os.WriteFile(flag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	advance()
	check(true, "the flag back")
}

func TestCheckIntervalDefaults(t *testing.T) {
	c := Config{Name: "n1", Broker: []string{"mqtt://127.0.0.1:1883"}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.CheckInterval != 5*time.Minute {
		t.Errorf("default check interval %s, want 5m", c.CheckInterval)
	}
	c = Config{Name: "n1", Broker: []string{"mqtt://127.0.0.1:1883"}, CheckInterval: time.Millisecond}
	if err := c.Validate(); err == nil {
		t.Error("a check interval of 1ms accepted")
	}
}
