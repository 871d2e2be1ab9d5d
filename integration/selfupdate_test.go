package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/proto"
)

// labd's unit is not restarted by a switch (restartIfChanged = false), so
// labd restarts itself when the activation installed a configuration that
// runs another labd: once the execution ended and was reported, it exits
// 0 and systemd (Restart=always) starts the new one.
func TestLabdRestartsIntoItsNewVersion(t *testing.T) {
	f := newFleet(t, []string{"n1"}, nil)
	n := f.nodes[0]
	n.appendConfig(fmt.Sprintf("labd_path: %q\n", bin.labd))
	f.startAll()
	// What the activation does on NixOS: /etc/labd/labd.yaml now names
	// the new labd.
	b, err := os.ReadFile(n.Config)
	if err != nil {
		t.Fatal(err)
	}
	updated := strings.Replace(string(b), fmt.Sprintf("labd_path: %q", bin.labd), `labd_path: "/nix/store/00000000000000000000000000000000-labd-2/bin/labd"`, 1)
	if err := os.WriteFile(n.Config, []byte(updated), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _ := f.publish("r-self", "--timeout", "60s"); code != exitSucceeded {
		t.Fatalf("publish exit %d", code)
	}
	f.Watch().AwaitState(t, "n1", "r-self", proto.StateSucceeded, 10*time.Second)
	done := make(chan error, 1)
	go func() { done <- n.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("labd exited with %v, want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("labd did not restart itself")
	}
	if !strings.Contains(n.Log(), "restarting into the new labd") {
		t.Errorf("log does not say why it stopped:\n%s", tail(n.Log(), 2000))
	}
	if !f.Watch().Online("n1") {
		t.Error("presence went offline for a restart")
	}
}
