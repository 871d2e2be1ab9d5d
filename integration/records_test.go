package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/proto"
)

// recordState is the STATE column of `labctl rollout list` for id.
func (f *fleet) recordState(id string) string {
	f.t.Helper()
	_, out, _ := f.Labctl("rollout", "list")
	for _, line := range strings.Split(out, "\n") {
		if fs := strings.Fields(line); len(fs) > 1 && fs[0] == id {
			return fs[1]
		}
	}
	f.t.Fatalf("rollout %s not in the list:\n%s", id, out)
	return ""
}

// Issue 13.1: Ctrl-C on a signed rolling rollout prints the command that
// continues it, with its key. Run without the key, resume refuses at once
// (exit 2) and the record stays running; run as printed, it finishes.
func TestInterruptedRolloutPrintsTheRealResumeCommand(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2"}, map[string][]string{"n1": {"--arg", "sleepSwitch", "2"}})
	f.startAll()
	args := []string{"publish", "--id", "r-int", "--key", f.KeyFile, "--strategy", "rolling", "--batch", "1"}
	for _, n := range f.nodes {
		args = append(args, "--toplevel", n.Name+"="+f.gen2[n.Name])
	}
	var out strings.Builder
	cmd := f.labctlAsync(&out, args...)
	f.Watch().AwaitState(t, "n1", "r-int", proto.StateActivating, 60*time.Second)
	_ = cmd.Process.Signal(syscall.SIGINT)
	if code := exitCode(cmd.Wait()); code != 1 {
		t.Fatalf("interrupted publish exit %d, want 1\n%s", code, out.String())
	}
	want := "labctl rollout resume r-int --key " + f.KeyFile
	if !strings.Contains(out.String(), want) {
		t.Fatalf("interrupted publish does not print %q:\n%s", want, out.String())
	}
	start := time.Now()
	code, _, errOut := f.Labctl("rollout", "resume", "r-int")
	if code != 2 || !strings.Contains(errOut, "--key") || time.Since(start) > 10*time.Second {
		t.Fatalf("resume without the key: exit %d after %s, want 2 at once naming --key\n%s", code, time.Since(start), errOut)
	}
	if st := f.recordState("r-int"); st != "running" {
		t.Fatalf("record after the refused resume: %s, want running", st)
	}
	code, o, e := f.Labctl(strings.Fields(want)[1:]...)
	if code != exitSucceeded {
		t.Fatalf("resume as printed: exit %d\n%s%s", code, o, e)
	}
	for _, n := range f.nodes {
		if c := switched(n, "switch", f.gen2[n.Name]); c != 1 {
			t.Errorf("%s switched to gen 2 %d times", n.Name, c)
		}
	}
	if st := f.recordState("r-int"); st != "succeeded" {
		t.Errorf("record after resume: %s", st)
	}
}

// Issues 13.2 and 13.3: one vocabulary. A rollout with a target asleep is
// recorded pending (exit 5), and resume follows it again when the node
// wakes; one with a roll-back is recorded rolled-back (exit 4) and keeps
// that result after a later rollout moved the node on.
func TestRecordsSayTheOutcome(t *testing.T) {
	f := newFleet(t, []string{"n1", "n2"}, map[string][]string{"n2": {"--arg", "failHealth", "true"}})
	f.nodes[0].Start()
	f.awaitOnline(f.nodes[0])
	code, _, _ := f.Labctl("publish", "--id", "r-asleep", "--key", f.KeyFile, "--allow-unseen", "--wave-deadline", "3s",
		"--toplevel", "n1="+f.gen2["n1"], "--toplevel", "n3=/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-n3")
	if code != exitPending {
		t.Fatalf("publish with n3 asleep: exit %d, want %d", code, exitPending)
	}
	if st := f.recordState("r-asleep"); st != "pending" {
		t.Fatalf("record of a pending rollout: %s, want pending", st)
	}
	if code, _, e := f.Labctl("rollout", "resume", "r-asleep", "--key", f.KeyFile, "--timeout", "2s"); code != exitPending || strings.Contains(e, "already ended") {
		t.Fatalf("resume of a pending rollout: exit %d, want %d\n%s", code, exitPending, e)
	}
	// Cancelling it clears what it published for the node that never came.
	if code, o, e := f.Labctl("rollout", "cancel", "r-asleep", "--key", f.KeyFile); code != 0 {
		t.Fatalf("cancel of a pending rollout: exit %d\n%s%s", code, o, e)
	}
	if st := f.recordState("r-asleep"); st != "cancelled" {
		t.Errorf("record after cancel: %s", st)
	}
	if raw := retained(t, f.Env, proto.DefaultTopics.NodeDesired("n3")); raw != "" {
		t.Errorf("after cancel, a Desired for n3 is still retained")
	}

	f.nodes[1].Start()
	f.awaitOnline(f.nodes[1])
	code, _, _ = f.Labctl("publish", "--id", "r-back", "--key", f.KeyFile, "--toplevel", "n2="+f.gen2["n2"])
	if code != exitRolledBack {
		t.Fatalf("publish with a failing check: exit %d, want %d", code, exitRolledBack)
	}
	if st := f.recordState("r-back"); st != "rolled-back" {
		t.Fatalf("record of a rolled-back rollout: %s, want rolled-back", st)
	}
	// A later rollout moves n2 on (back to gen 1, which is healthy).
	if code, _, _ := f.Labctl("publish", "--id", "r-after", "--key", f.KeyFile, "--action", "test", "--toplevel", "n2="+f.gen1["n2"]); code != exitSucceeded {
		t.Fatalf("later rollout: exit %d", code)
	}
	code, out, _ := f.Labctl("rollout", "show", "r-back")
	if code != exitRolledBack || !strings.Contains(out, "rolled-back") || strings.Contains(out, "superseded") {
		t.Fatalf("rollout show of the earlier rollout: exit %d, want %d with n2 rolled-back\n%s", code, exitRolledBack, out)
	}
}

// Issue 13.4: an id names one rollout. Reusing it is refused (exit 2) and
// the first record is kept.
func TestRolloutIDReuseIsRefused(t *testing.T) {
	f := newFleet(t, []string{"n1"}, nil)
	f.startAll()
	if code, _ := f.publish("r-same"); code != exitSucceeded {
		t.Fatalf("first publish: exit %d", code)
	}
	code, _, errOut := f.Labctl("publish", "--id", "r-same", "--key", f.KeyFile, "--toplevel", "n1="+f.gen1["n1"])
	if code != 2 || !strings.Contains(errOut, "exists") {
		t.Fatalf("second publish with the same id: exit %d, want 2\n%s", code, errOut)
	}
	_, out, _ := f.Labctl("rollout", "show", "r-same", "--json")
	if !strings.Contains(out, f.gen2["n1"]) || strings.Contains(out, f.gen1["n1"]) {
		t.Errorf("the first record changed:\n%s", out)
	}
}

// Issue 13.5: a name no labd ever used is refused at once (exit 2), with
// nothing left on the broker; --allow-unseen publishes it with a warning.
func TestPublishToAnUnseenNameIsRefused(t *testing.T) {
	f := newFleet(t, []string{"n1"}, nil)
	f.startAll()
	start := time.Now()
	code, _, errOut := f.Labctl("publish", "--id", "r-typo", "--key", f.KeyFile, "--on", "web", "--toplevel", f.gen2["n1"])
	if code != 2 || !strings.Contains(errOut, "never seen") || !strings.Contains(errOut, "--allow-unseen") || !strings.Contains(errOut, "--on @web") {
		t.Fatalf("publish --on web (no such node): exit %d, want 2\n%s", code, errOut)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the refusal took %s", d)
	}
	if code, out, _ := f.Labctl("rollout", "list"); code != 0 || strings.Contains(out, "r-typo") {
		t.Errorf("a refused rollout was recorded:\n%s", out)
	}
	if raw := retained(t, f.Env, proto.DefaultTopics.NodeDesired("web")); raw != "" {
		t.Errorf("a Desired for web is retained: %q", raw)
	}
}

// Issue 13.7: a nix-build result link is taken for the store path it
// points to.
func TestToplevelResultLink(t *testing.T) {
	f := newFleet(t, []string{"n1"}, nil)
	f.startAll()
	link := filepath.Join(t.TempDir(), "result")
	if err := os.Symlink(f.gen2["n1"], link); err != nil {
		t.Fatal(err)
	}
	if code, o, e := f.Labctl("publish", "--id", "r-link", "--key", f.KeyFile, "--toplevel", "n1="+link); code != exitSucceeded {
		t.Fatalf("publish --toplevel n1=%s: exit %d\n%s%s", link, code, o, e)
	}
	if s, _ := f.Watch().Status("n1"); s.Current != f.gen2["n1"] {
		t.Errorf("n1 runs %s, want %s", s.Current, f.gen2["n1"])
	}
	dir := t.TempDir()
	code, _, errOut := f.Labctl("publish", "--id", "r-dir", "--key", f.KeyFile, "--toplevel", "n1="+dir)
	if code != 2 || !strings.Contains(errOut, "not a store path") {
		t.Errorf("publish --toplevel of a plain directory: exit %d\n%s", code, errOut)
	}
}

// retained returns the payload retained on topic ("" when none), read as
// a controller would.
func retained(t *testing.T, e *Env, topic string) string {
	t.Helper()
	got := make(chan []byte, 1)
	cfg := bus.Config{URLs: []string{e.BrokerURL()}, ClientID: "test-read-" + proto.NewID()[:8], CleanStart: true,
		OnMessage: func(m bus.Message) {
			select {
			case got <- m.Payload:
			default:
			}
		}}
	if e.creds != nil {
		cfg.Username, cfg.Password, cfg.ClientID = mosqController, []byte(e.creds.password(t, mosqController)), mosqController+"-read"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := bus.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close(context.Background()) }()
	if err := c.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(ctx, topic); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		return string(p)
	case <-time.After(2 * time.Second):
		return ""
	}
}
