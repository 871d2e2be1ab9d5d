package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/clock"
)

// run runs checks with a real clk and fails the test if that takes long.
func run(t *testing.T, r *Runner, checks ...Check) []Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return r.Run(ctx, checks)
}

// fast is a check with no retries and a short timeout.
func fast(c Check) Check {
	c.Retries, c.Timeout, c.Interval = -1, 2*time.Second, time.Millisecond
	return c
}

func TestHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bad" {
			http.Error(w, "database down", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	res := run(t, &Runner{},
		fast(Check{Name: "ok", Type: TypeHTTP, URL: srv.URL + "/ok"}),
		fast(Check{Name: "bad", Type: TypeHTTP, URL: srv.URL + "/bad"}),
		fast(Check{Name: "want500", Type: TypeHTTP, URL: srv.URL + "/bad", ExpectStatus: 500}),
	)
	if !res[0].OK || res[0].Attempts != 1 || res[0].Name != "ok" {
		t.Errorf("200: %+v", res[0])
	}
	if res[1].OK || !strings.Contains(res[1].Detail, "status 500, want 200: database down") {
		t.Errorf("500: %+v", res[1])
	}
	if !res[2].OK {
		t.Errorf("expected 500: %+v", res[2])
	}
}

func TestHTTPTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	c := fast(Check{Name: "hang", Type: TypeHTTP, URL: srv.URL})
	c.Timeout = 50 * time.Millisecond
	start := time.Now()
	res := run(t, &Runner{}, c)[0]
	if res.OK || !strings.HasPrefix(res.Detail, "timeout after 50ms") {
		t.Errorf("hanging check: %+v", res)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
}

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	res := run(t, &Runner{},
		fast(Check{Name: "open", Type: TypeTCP, Address: ln.Addr().String()}),
		fast(Check{Name: "closed", Type: TypeTCP, Address: closedAddr}))
	if !res[0].OK {
		t.Errorf("open port: %+v", res[0])
	}
	if res[1].OK || !strings.Contains(res[1].Detail, "refused") {
		t.Errorf("closed port: %+v", res[1])
	}
}

func TestCommand(t *testing.T) {
	r := &Runner{Env: []string{"LAB_TOPLEVEL=/nix/store/00000000000000000000000000000000-sys"}}
	res := run(t, r,
		fast(Check{Name: "true", Type: TypeCommand, Command: []string{"true"}}),
		fast(Check{Name: "false", Type: TypeCommand, Command: []string{"false"}}),
		fast(Check{Name: "missing", Type: TypeCommand, Command: []string{"/nonexistent/lab-check"}}),
		fast(Check{Name: "env", Type: TypeCommand, Command: []string{"printenv", "LAB_TOPLEVEL"}}),
		fast(Check{Name: "noshell", Type: TypeCommand, Command: []string{"echo", "$HOME;", "`id`"}}),
	)
	if !res[0].OK {
		t.Errorf("true: %+v", res[0])
	}
	if res[1].OK || !strings.Contains(res[1].Detail, "exit status 1") {
		t.Errorf("false: %+v", res[1])
	}
	if res[2].OK || !strings.Contains(res[2].Detail, "no such file") {
		t.Errorf("missing binary: %+v", res[2])
	}
	if !res[3].OK || res[3].Detail != "/nix/store/00000000000000000000000000000000-sys" {
		t.Errorf("env: %+v", res[3])
	}
	if res[4].Detail != "$HOME; `id`" {
		t.Errorf("arguments went through a shell: %+v", res[4])
	}
}

func TestSystemd(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	r := &Runner{Exec: func(_ context.Context, argv, _ []string) ([]byte, error) {
		mu.Lock()
		calls = append(calls, strings.Join(argv, " "))
		mu.Unlock()
		switch strings.Join(argv, " ") {
		case "systemctl is-active nginx.service":
			return []byte("active\n"), nil
		case "systemctl is-active db.service":
			return []byte("failed\n"), errors.New("exit status 3")
		case "systemctl --failed --no-legend --plain":
			return []byte("foo.service loaded failed failed Foo\n"), nil
		}
		return nil, fmt.Errorf("unexpected %q", argv)
	}}
	res := run(t, r,
		fast(Check{Name: "nginx", Type: TypeSystemd, Unit: "nginx.service"}),
		fast(Check{Name: "db", Type: TypeSystemd, Unit: "db.service"}),
		fast(Check{Name: "nofailed", Type: TypeSystemd}))
	if !res[0].OK || res[0].Detail != "unit nginx.service is active" {
		t.Errorf("active unit: %+v", res[0])
	}
	if res[1].OK || !strings.Contains(res[1].Detail, "is failed") {
		t.Errorf("failed unit: %+v", res[1])
	}
	if res[2].OK || !strings.Contains(res[2].Detail, "foo.service") {
		t.Errorf("failed units: %+v", res[2])
	}
	if len(calls) != 3 {
		t.Errorf("calls: %q", calls)
	}
}

// counting returns an ExecFunc that fails the first n calls, and its counter.
func counting(n int32) (ExecFunc, *atomic.Int32) {
	var calls atomic.Int32
	return func(context.Context, []string, []string) ([]byte, error) {
		if calls.Add(1) <= n {
			return []byte("not yet"), errors.New("exit status 1")
		}
		return []byte("fine"), nil
	}, &calls
}

// runFake runs checks on a fake clk, advancing it whenever a timer waits.
func runFake(t *testing.T, r *Runner, clk *clock.Fake, checks ...Check) []Result {
	t.Helper()
	r.Clock = clk
	done := make(chan []Result)
	go func() { done <- r.Run(context.Background(), checks) }()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		select {
		case res := <-done:
			return res
		default:
		}
		if clk.Pending() > 0 {
			clk.Advance(time.Second)
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("Run did not return")
	return nil
}

func TestRetries(t *testing.T) {
	exec, calls := counting(2)
	clk := clock.NewFake(time.Unix(0, 0))
	c := Check{Name: "flaky", Type: TypeCommand, Command: []string{"x"}, Interval: 5 * time.Second}
	res := runFake(t, &Runner{Exec: exec}, clk, c)[0]
	if !res.OK || res.Attempts != 3 || calls.Load() != 3 || res.Detail != "fine" {
		t.Errorf("flaky: %+v after %d calls", res, calls.Load())
	}
	if got := clk.Now().Sub(time.Unix(0, 0)); got != 10*time.Second {
		t.Errorf("two intervals of 5s took %s of fake time", got)
	}
	if !res.At.Equal(clk.Now()) {
		t.Errorf("At = %v, want %v", res.At, clk.Now())
	}

	exec, calls = counting(100)
	c.Retries = 3
	res = runFake(t, &Runner{Exec: exec}, clock.NewFake(time.Unix(0, 0)), c)[0]
	if res.OK || res.Attempts != 4 || calls.Load() != 4 || !strings.Contains(res.Detail, "not yet") {
		t.Errorf("always failing, 3 retries: %+v after %d calls", res, calls.Load())
	}
}

func TestGrace(t *testing.T) {
	exec, calls := counting(0)
	clk := clock.NewFake(time.Unix(0, 0))
	done := make(chan Result)
	r := &Runner{Exec: exec, Clock: clk}
	go func() {
		done <- r.Run(context.Background(), []Check{{Name: "g", Type: TypeCommand, Command: []string{"x"}, Grace: 30 * time.Second}})[0]
	}()
	for clk.Pending() == 0 {
		time.Sleep(time.Millisecond)
	}
	clk.Advance(29 * time.Second)
	time.Sleep(20 * time.Millisecond)
	if calls.Load() != 0 {
		t.Fatal("attempted before the grace period ended")
	}
	clk.Advance(time.Second)
	res := <-done
	if !res.OK || res.Attempts != 1 || calls.Load() != 1 {
		t.Errorf("after grace: %+v", res)
	}
}

func TestCancelAndInvalid(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	clk := clock.NewFake(time.Unix(0, 0))
	r := &Runner{Clock: clk}
	done := make(chan []Result)
	go func() {
		done <- r.Run(ctx, []Check{
			{Name: "slow", Type: TypeCommand, Command: []string{"true"}, Grace: time.Hour},
			{Name: "broken", Type: "ping"},
		})
	}()
	for clk.Pending() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	res := <-done
	if res[0].OK || res[0].Attempts != 0 || !strings.Contains(res[0].Detail, "cancelled") {
		t.Errorf("cancelled: %+v", res[0])
	}
	if res[1].OK || res[1].Attempts != 0 || !strings.Contains(res[1].Detail, `check "broken": type`) {
		t.Errorf("invalid: %+v", res[1])
	}
}

// Checks run concurrently: each waits for the other to have started.
func TestConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	wg.Add(2)
	r := &Runner{Exec: func(ctx context.Context, _, _ []string) ([]byte, error) {
		wg.Done()
		wg.Wait()
		return nil, nil
	}}
	res := run(t, r, fast(Check{Name: "a", Type: TypeCommand, Command: []string{"a"}}),
		fast(Check{Name: "b", Type: TypeCommand, Command: []string{"b"}}))
	if !res[0].OK || !res[1].OK {
		t.Errorf("%+v", res)
	}
}
