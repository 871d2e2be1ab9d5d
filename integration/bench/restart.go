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
	if !signalAndWait(old, sig, 60*time.Second) { // SIGKILL: no goodbye, no last save
		return 0, fmt.Errorf("the broker did not stop within 60 s of %s", sigName(sig))
	}
	stopped := time.Since(t0)
	nc, _, err := startBrokerOn(kind, dir, labctl, o, port)
	if err != nil {
		return 0, err
	}
	*cmd = nc
	listening := time.Since(t0)
	back := func() int { n, _ := w.onlineSince(t0.UnixMilli()); return n }
	if !w.awaitCount(o.nodes, o.timeout, back) {
		return 0, fmt.Errorf("%d of %d nodes back online %s after the restart (%d connections to the broker)", back(), o.nodes, o.timeout, brokerConnections(url))
	}
	_, last := w.onlineSince(t0.UnixMilli())
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
