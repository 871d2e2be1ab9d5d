package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lab-fleet/lab/node"
	"github.com/lab-fleet/lab/node/nixsys/nixsystest"
)

// gen1 is the system every simulated node runs at the start: a valid
// store path that exists nowhere (Nix is replaced by an instant executor).
const gen1 = "/nix/store/00000000000000000000000000000001-nixos-system-bench-1"

// countConn counts the bytes a node sends and receives on the wire.
type countConn struct {
	net.Conn
	sent, recv *atomic.Int64
}

func (c countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.recv.Add(int64(n))
	return n, err
}

func (c countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.sent.Add(int64(n))
	return n, err
}

// runSim runs -count simulated nodes in this process: the real labd
// daemon (connection, reconciliation, state machine, status), with Nix
// replaced by nixsystest.Fake whose steps succeed at once. It prints
// "ready" once every daemon runs, then answers "bytes" on stdin with the
// bytes sent and received so far; at EOF it stops the daemons cleanly.
func runSim(args []string) int {
	fs := flag.NewFlagSet("bench sim", flag.ContinueOnError)
	broker := fs.String("broker", "", "broker URL")
	from := fs.Int("from", 0, "index of the first node")
	count := fs.Int("count", 100, "nodes in this process")
	dir := fs.String("dir", "", "state directory root")
	key := fs.String("key", "", "trusted public key")
	group := fs.String("group", "bench", "group of every node")
	passwords := fs.String("passwords", "", "directory of NAME.password files: log in as each node's identity")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var sent, recv atomic.Int64
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countConn{c, &sent, &recv}, nil
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	bootID := filepath.Join(*dir, "boot_id")
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.WriteFile(bootID, []byte("bench-boot\n"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := *from; i < *from+*count; i++ {
		name := nodeName(i)
		fake := nixsystest.New()
		fake.SetCurrent(gen1)
		cfg := node.Config{Name: name, Groups: []string{*group}, Broker: []string{*broker},
			StateDir: filepath.Join(*dir, name), TrustedKeys: []string{*key}, BootIDFile: bootID,
			RebootCommand: []string{"true"}, KeepAlive: 60 * time.Second, Version: "bench", Logger: logger, Dial: dial}
		if *passwords != "" {
			cfg.PasswordFile = filepath.Join(*passwords, name+".password")
		}
		d, err := node.New(cfg, fake)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			cancel()
			return 1
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.Run(ctx); err != nil {
				logger.Error("node stopped", "node", name, "err", err)
			}
		}()
		if i%100 == 99 {
			time.Sleep(5 * time.Millisecond) // spread the connection storm a little (listen backlog)
		}
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "bytes" {
			fmt.Printf("bytes %d %d\n", sent.Load(), recv.Load())
		}
	}
	if err := in.Err(); err != nil && err != io.EOF {
		fmt.Fprintln(os.Stderr, err)
	}
	cancel()
	wg.Wait()
	return 0
}

func nodeName(i int) string { return fmt.Sprintf("b%05d", i) }
