package integration

import (
	"fmt"
	"os"
	"path/filepath"
)

// externalBroker names the broker the suite runs against: "" for the
// embedded one (labctl broker), "mosquitto" for mosquitto started by the
// harness (LAB_TEST_BROKER=mosquitto). labd and labctl need nothing from
// the embedded broker on the critical path; this proves it.
func externalBroker() string { return os.Getenv("LAB_TEST_BROKER") }

// startMosquittoPlain runs mosquitto (MQTT v5, persistence on, anonymous
// access) on the env's port.
func (e *Env) startMosquittoPlain() {
	e.t.Helper()
	requireTools(e.t, "mosquitto")
	dir := filepath.Join(e.Dir, "mosquitto")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	conf := fmt.Sprintf("user root\nper_listener_settings false\nlistener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nmax_queued_messages 10000\n", e.Port, dir)
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.runBroker("mosquitto", "-c", filepath.Join(dir, "mosquitto.conf"))
}
