package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// runIdle measures what an idle labd costs a laptop: one real labd
// process, connected to the embedded broker, doing nothing for -duration.
// It prints RSS, CPU time and wake-ups (context switches of all its
// threads) per minute.
func runIdle(args []string) int {
	fs := flag.NewFlagSet("bench idle", flag.ContinueOnError)
	duration := fs.Duration("duration", 10*time.Minute, "how long labd stays idle")
	keepalive := fs.Duration("keepalive", 30*time.Second, "labd's MQTT keepalive")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	dir, err := os.MkdirTemp("", "lab-bench-idle-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "bench idle:", err); return 1 }
	labctl, err := buildLabctl(dir)
	if err != nil {
		return fail(err)
	}
	labd := filepath.Join(dir, "labd")
	if out, err := exec.Command("go", "build", "-o", labd, "github.com/lab-fleet/lab/cmd/labd").CombinedOutput(); err != nil {
		return fail(fmt.Errorf("building labd: %v\n%s", err, out))
	}
	brokerCmd, url, err := startBroker("embedded", dir, labctl, options{nodes: 1})
	if err != nil {
		return fail(err)
	}
	defer stop(brokerCmd)
	w := newWatcher()
	wc, err := subscribe(url, "bench-idle-watch", w)
	if err != nil {
		return fail(err)
	}
	defer wc.Close(context.Background())
	if err := os.WriteFile(filepath.Join(dir, "boot_id"), []byte("idle-boot\n"), 0o644); err != nil {
		return fail(err)
	}
	key, err := proto.GenerateKey("bench")
	if err != nil {
		return fail(err)
	}
	cfg := fmt.Sprintf("name: idle1\ngroups: [laptops]\nbroker: %s\nstate_dir: %s\nprofile: %s\nboot_id_file: %s\nreboot_command: [\"true\"]\nkeepalive: %s\nlog_level: warn\ntrusted_keys: [%q]\n",
		url, filepath.Join(dir, "state"), filepath.Join(dir, "profiles", "system"), filepath.Join(dir, "boot_id"), keepalive, key.Public().String())
	if err := os.WriteFile(filepath.Join(dir, "labd.yaml"), []byte(cfg), 0o644); err != nil {
		return fail(err)
	}
	cmd := exec.Command(labd, "--config", filepath.Join(dir, "labd.yaml"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	defer stop(cmd)
	if !w.awaitCount(1, 30*time.Second, w.onlineCount) {
		return fail(fmt.Errorf("labd did not come online"))
	}
	time.Sleep(5 * time.Second) // start-up done
	pid := cmd.Process.Pid
	cpu0, sw0 := cpuTicks(pid), switches(pid)
	rss0 := rss(pid)
	time.Sleep(*duration)
	cpu1, sw1 := cpuTicks(pid), switches(pid)
	rss1 := rss(pid)
	minutes := duration.Minutes()
	fmt.Printf("| idle labd (keepalive %s) | value |\n|---|---|\n", *keepalive)
	fmt.Printf("| measured for | %s |\n", *duration)
	fmt.Printf("| RSS at start / end | %.1f MiB / %.1f MiB |\n", float64(rss0)/(1<<20), float64(rss1)/(1<<20))
	fmt.Printf("| CPU time (user+system) | %d ms (%.2f ms per minute) |\n", (cpu1-cpu0)*10, float64(cpu1-cpu0)*10/minutes)
	fmt.Printf("| wake-ups (context switches, all threads) | %d (%.1f per minute) |\n", sw1-sw0, float64(sw1-sw0)/minutes)
	fmt.Printf("| MQTT keepalive pings in that time | %.0f |\n", duration.Seconds()/keepalive.Seconds())
	return 0
}

// cpuTicks is utime+stime of a process, in clock ticks (1/100 s).
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// switches sums the voluntary and involuntary context switches of every
// thread of a process.
func switches(pid int) int64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	var n int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 2 && (f[0] == "voluntary_ctxt_switches:" || f[0] == "nonvoluntary_ctxt_switches:") {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				n += v
			}
		}
	}
	return n
}
