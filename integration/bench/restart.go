package main

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// restartBroker stops the running broker (*cmd) with sig, starts it again
// on the same address with the same data directory, and measures the
// fleet's return: the time from the signal to the last node's online
// presence published after it (Since, stamped by the node: the watcher's
// own reconnect backoff does not count). Then a new subscriber must find
// every node's retained status as the watcher last saw it: the restart
// lost nothing.
// *cmd is the new broker afterwards.
func restartBroker(o options, kind, dir, labctl, url string, cmd **exec.Cmd, w *watcher, sig syscall.Signal) (time.Duration, error) {
	_, portStr, err := net.SplitHostPort(strings.TrimPrefix(url, "mqtt://"))
	if err != nil {
		return 0, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return 0, err
	}
	want := w.histogram()
	old := *cmd
	t0 := time.Now()
	if err := old.Process.Signal(sig); err != nil { // SIGKILL: no goodbye, no last save
		return 0, err
	}
	exited := make(chan struct{})
	go func() { _ = old.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		_ = old.Process.Kill()
		<-exited
		return 0, fmt.Errorf("the broker did not stop within 60 s of %s", sig)
	}
	stopped := time.Since(t0)
	nc, _, err := startBrokerOn(kind, dir, labctl, o, port)
	if err != nil {
		return 0, err
	}
	*cmd = nc
	listening := time.Since(t0)
	since := t0.UnixMilli()
	back := func() int {
		return w.count(func() int {
			n := 0
			for _, at := range w.onlineAt {
				if at >= since {
					n++
				}
			}
			return n
		})
	}
	if !w.awaitCount(o.nodes, o.timeout, back) {
		return 0, fmt.Errorf("%d of %d nodes back online %s after the restart (%d connections to the broker)", back(), o.nodes, o.timeout, brokerConnections(url))
	}
	last := int64(0)
	w.count(func() int {
		for _, at := range w.onlineAt {
			last = max(last, at)
		}
		return 0
	})
	d := time.UnixMilli(last).Sub(t0)
	fmt.Fprintf(os.Stderr, "bench: %s: restart by %s: stopped after %s, listening again after %s, last node online after %s\n", kind, sigName(sig), dur(stopped), dur(listening), dur(d))

	fresh := newWatcher()
	fc, err := subscribe(url, "bench-after-restart", fresh)
	if err != nil {
		return 0, err
	}
	defer fc.Close(context.Background())
	total := func() int {
		n := 0
		for _, c := range fresh.histogram() {
			n += c
		}
		return n
	}
	fresh.awaitCount(o.nodes, 30*time.Second, total)
	if got := fresh.histogram(); !maps.Equal(got, want) {
		return 0, fmt.Errorf("the restart lost retained status: before, the nodes' statuses said %v; a new subscriber after it finds %v", want, got)
	}
	return d, nil
}

func sigName(s syscall.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGKILL:
		return "SIGKILL"
	}
	return s.String()
}
