package integration

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// docs/security.md's mosquitto steps, as written, against Debian's
// mosquitto started as root the way its service is: it drops to the user
// mosquitto before it reads passwd and acl. Only the paths (a scratch
// directory for /etc/mosquitto/lab) and the port differ. A node publishes
// its status and the viewer reads it with the credentials the steps made.
func TestSecurityDocMosquittoSteps(t *testing.T) {
	requireTools(t, "bash", "mosquitto", "mosquitto_sub", "mosquitto_pub")
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: the steps run as root (mosquitto drops from root to its own user); CI runs as root")
	}
	mosq, err := user.Lookup("mosquitto")
	if err != nil {
		t.Skipf("SKIPPED: no user mosquitto (Debian's mosquitto package creates it): %v", err)
	}
	dir := t.TempDir()
	// mosquitto, once it is user mosquitto, must reach the exported files.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	etcLab, work := filepath.Join(dir, "etc-mosquitto-lab"), filepath.Join(dir, "operator")
	if err := os.MkdirAll(work, 0o700); err != nil {
		t.Fatal(err)
	}
	steps := docBlock(t, "docs/security.md", "mosquitto-export")
	conf := docBlock(t, "docs/security.md", "mosquitto-conf")
	for _, s := range []string{steps, conf} {
		if !strings.Contains(s, "/etc/mosquitto/lab") {
			t.Fatalf("the block no longer uses /etc/mosquitto/lab; update this test:\n%s", s)
		}
	}
	if !strings.Contains(conf, "listener 1883\n") {
		t.Fatalf("the configuration no longer has `listener 1883`; update this test:\n%s", conf)
	}
	port := freePort(t)
	steps = strings.ReplaceAll(steps, "/etc/mosquitto/lab", etcLab)
	conf = strings.ReplaceAll(conf, "/etc/mosquitto/lab", etcLab)
	conf = strings.Replace(conf, "listener 1883\n", fmt.Sprintf("listener %d 127.0.0.1\n", port), 1)

	runIn(t, work, []string{"PATH=" + filepath.Dir(bin.labctl) + ":" + os.Getenv("PATH")}, "bash", "-e", "-c", steps)

	// Debian's mosquitto.conf (pid file, persistence, log file) minus what
	// needs its service's directories, plus conf.d/lab.conf.
	confFile := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confFile, []byte("log_dest stdout\n"+conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cmd := exec.Command("mosquitto", "-c", confFile)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	if err := awaitPortOrExit(port, exited, 20*time.Second); err != nil {
		t.Fatalf("mosquitto did not start: %v\n%s", err, log.String())
	}
	if uid := procUID(t, cmd.Process.Pid); uid != mosq.Uid {
		t.Errorf("mosquitto runs as uid %s, want mosquitto (%s): the test does not test what the page describes", uid, mosq.Uid)
	}

	pw := func(name string) string {
		b, err := os.ReadFile(filepath.Join(work, "secrets", name+".password"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	p := fmt.Sprint(port)
	if out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", p, "-i", "web", "-u", "web", "-P", pw("web"),
		"-t", "lab/v1/node/web/status", "-r", "-q", "1", "-m", "hello").CombinedOutput(); err != nil {
		t.Fatalf("the node web may not publish its status: %v\n%s\n%s", err, out, log.String())
	}
	out, err := exec.Command("mosquitto_sub", "-h", "127.0.0.1", "-p", p, "-i", "grafana-1", "-u", "grafana", "-P", pw("grafana"),
		"-t", "lab/v1/node/+/status", "-v", "-C", "1", "-W", "10").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "lab/v1/node/web/status hello" {
		t.Fatalf("the viewer grafana did not read web's status: %v\n%s\n%s", err, out, log.String())
	}
}

// README's mosquitto_sub for a viewer, as written, against `labctl broker
// --identities` with a running labd: the mirror's JSON arrives. Only the
// port and an end (-C, -W) are added.
func TestReadmeMosquittoSubAsViewer(t *testing.T) {
	requireTools(t, "bash", "mosquitto_sub")
	sf := newSecureFleet(t, false)
	sf.startAll()
	lines := strings.Split(strings.TrimSpace(docBlock(t, "README.md", "mosquitto-sub-viewer")), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "labctl node add viewer") || !strings.Contains(lines[1], "-h 127.0.0.1 ") {
		t.Fatalf("the README block changed its shape; update this test:\n%s", strings.Join(lines, "\n"))
	}
	env := []string{"PATH=" + filepath.Dir(bin.labctl) + ":" + os.Getenv("PATH")}
	runIn(t, sf.Dir, env, "bash", "-e", "-c", lines[0]) // next to sf.identities, which the broker reads
	sub := strings.Replace(lines[1], "-h 127.0.0.1 ", fmt.Sprintf("-h 127.0.0.1 -p %d -C 1 -W 5 ", sf.Port), 1)
	var out []byte
	var err error
	eventually(t, 20*time.Second, "the viewer's mosquitto_sub to receive the mirror (the broker reloads identities every 2 s)", func() bool {
		cmd := exec.Command("bash", "-c", sub)
		cmd.Dir, cmd.Env = sf.Dir, append(os.Environ(), env...)
		out, err = cmd.CombinedOutput()
		return err == nil
	})
	if !strings.HasPrefix(string(out), "lab/v1/json/node/n") || !strings.Contains(string(out), `"kind":`) {
		t.Errorf("mosquitto_sub printed %q (%v), want a lab/v1/json/node/... message", out, err)
	}
}

// awaitPortOrExit waits until 127.0.0.1:port accepts connections, or the
// process reports its exit on exited.
func awaitPortOrExit(port int, exited chan error, total time.Duration) error {
	deadline := time.Now().Add(total)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("exited: %v", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("port %d not open after %s", port, total)
}

// procUID is the real uid of a running process, from /proc.
func procUID(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
			return f[1]
		}
	}
	t.Fatalf("/proc/%d/status has no Uid line", pid)
	return ""
}
