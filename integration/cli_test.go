package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runBin runs one of the built binaries with only env's broker settings
// (the test's own LAB_* variables are dropped) and returns exit code and
// combined output.
func runBin(t *testing.T, bin string, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LAB_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	t.Logf("%v %s %s → exit %d\n%s", env, filepath.Base(bin), strings.Join(args, " "), exitCode(err), out)
	return exitCode(err), string(out)
}

// TestBrokerSpellingSharedByLabctlAndLabd: the broker is LAB_BROKER for
// both programs, and LAB_BROKER_URL (labctl's older spelling) works for
// both too: the same environment points labctl and labd at one broker.
func TestBrokerSpellingSharedByLabctlAndLabd(t *testing.T) {
	port := freePort(t)
	broker := exec.Command(bin.labctl, "broker", "--listen", fmt.Sprintf("127.0.0.1:%d", port))
	broker.Env = []string{"PATH=" + os.Getenv("PATH")}
	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopProcess(broker) })
	waitPort(t, port)
	url := fmt.Sprintf("mqtt://127.0.0.1:%d", port)
	labd := []string{"LAB_NAME=n1", "LAB_STATE_DIR=" + t.TempDir()}
	for _, name := range []string{"LAB_BROKER", "LAB_BROKER_URL"} {
		env := []string{name + "=" + url}
		if code, out := runBin(t, bin.labctl, env, "status"); code != 0 || !strings.Contains(out, "no nodes have reported yet") {
			t.Errorf("%s: labctl status exit %d; want it to read the broker at %s", name, code, url)
		}
		if code, out := runBin(t, bin.labd, append(env, labd...), "--check-config"); code != 0 || !strings.Contains(out, url) {
			t.Errorf("%s: labd --check-config exit %d; want it to name %s", name, code, url)
		}
	}
}
