package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lab-fleet/lab/broker/access"
	"github.com/lab-fleet/lab/internal/bus"
)

// externalBroker names the broker the suite runs against: "" for the
// embedded one (labctl broker), "mosquitto" for mosquitto started by the
// harness (LAB_TEST_BROKER=mosquitto). labd and labctl need nothing from
// the embedded broker on the critical path; this proves it.
func externalBroker() string { return os.Getenv("LAB_TEST_BROKER") }

// The mosquitto pass runs with the rules a user deploys: no anonymous
// access, the ACL and password file written by `labctl acl export`, one
// identity per node name the suite uses, a controller (labctl, the
// tests' own clients) and a viewer (the status watcher).
const (
	mosqController = "ops"
	mosqViewer     = "watch"
)

// mosqNodeNames are the node identities of the mosquitto pass; a test
// that names another node fails with a clear message (see NewNode).
var mosqNodeNames = func() []string {
	names := []string{"n1", "n2", "n3", "n4", "n5", "web", "db", "storage"}
	for i := 1; i <= 50; i++ {
		names = append(names, fmt.Sprintf("s%03d", i))
	}
	return names
}()

// mosqCreds is the exported rule set, made once per test binary.
var mosqCreds struct {
	once sync.Once
	dir  string // identities.yaml, NAME.password, acl, passwd
	err  error
}

// mosquittoRules writes the identities and exports them with labctl.
func mosquittoRules(t *testing.T) string {
	t.Helper()
	mosqCreds.once.Do(func() {
		dir, err := os.MkdirTemp("", "lab-mosquitto-rules-")
		if err != nil {
			mosqCreds.err = err
			return
		}
		mosqCreds.dir = dir
		var f access.File
		add := func(name string, role access.Role, groups []string) error {
			pw := []byte(name + "-secret-" + fmt.Sprint(os.Getpid()))
			h, err := access.HashPassword(pw)
			if err != nil {
				return err
			}
			f.Put(access.Identity{Name: name, Role: role, Groups: groups, PasswordHash: h})
			return os.WriteFile(filepath.Join(dir, name+".password"), append(pw, '\n'), 0o600)
		}
		for _, n := range mosqNodeNames {
			if err := add(n, access.RoleNode, []string{"web", "db", "storage", "soak"}); err != nil {
				mosqCreds.err = err
				return
			}
		}
		if err := add(mosqController, access.RoleController, nil); err != nil {
			mosqCreds.err = err
			return
		}
		if err := add(mosqViewer, access.RoleViewer, nil); err != nil {
			mosqCreds.err = err
			return
		}
		if err := access.Save(filepath.Join(dir, "identities.yaml"), f); err != nil {
			mosqCreds.err = err
			return
		}
		out, err := exec.Command(bin.labctl, "acl", "export", "--format", "mosquitto", "--identities", filepath.Join(dir, "identities.yaml"),
			"--passwords", dir, "--out", dir).CombinedOutput()
		if err != nil {
			mosqCreds.err = fmt.Errorf("labctl acl export: %v\n%s", err, out)
		}
	})
	if mosqCreds.err != nil {
		t.Fatalf("mosquitto rules: %v", mosqCreds.err)
	}
	return mosqCreds.dir
}

// startMosquittoPlain runs mosquitto (MQTT v5, persistence on, the
// exported ACL and passwords) on the env's port; labctl, the nodes and
// the watcher use the identities the rules know.
func (e *Env) startMosquittoPlain() {
	e.t.Helper()
	requireTools(e.t, "mosquitto")
	rules := mosquittoRules(e.t)
	dir := filepath.Join(e.Dir, "mosquitto")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	// Saved after every change, so that a SIGKILL loses nothing (the
	// broker-kill case); a production broker picks its own trade-off.
	conf := fmt.Sprintf("user root\nper_listener_settings false\nlistener %d 127.0.0.1\nallow_anonymous false\npassword_file %s\nacl_file %s\n"+
		"persistence true\npersistence_location %s/\nautosave_on_changes true\nautosave_interval 1\nmax_queued_messages 10000\n",
		e.Port, filepath.Join(rules, "passwd"), filepath.Join(rules, "acl"), dir)
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.creds = &creds{dir: rules}
	e.runBroker("mosquitto", "-c", filepath.Join(dir, "mosquitto.conf"))
}

// creds are the identities a test's clients use when the broker wants
// them (the mosquitto pass); nil: anonymous.
type creds struct{ dir string }

func (c *creds) passwordFile(name string) string { return filepath.Join(c.dir, name+".password") }

func (c *creds) password(t *testing.T, name string) string {
	b, err := os.ReadFile(c.passwordFile(name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:len(b)-1])
}

// labctlEnv is what labctl needs to log in as the controller.
func (e *Env) labctlEnv() []string {
	var env []string
	if !e.service {
		// The tests written before the controller service drive their
		// rollouts from labctl (service_test.go submits them).
		env = append(env, "LAB_LOCAL_CONTROLLER=true")
	}
	if e.creds == nil {
		return env
	}
	return append(env, "LAB_USERNAME="+mosqController, "LAB_PASSWORD_FILE="+e.creds.passwordFile(mosqController))
}

// nodeConfigLines are the node's credentials, if the broker wants them.
func (e *Env) nodeConfigLines(name string) string {
	if e.creds == nil {
		return ""
	}
	if !slices.Contains(mosqNodeNames, name) {
		e.t.Fatalf("node %q has no identity in the mosquitto pass: add it to mosqNodeNames", name)
	}
	return fmt.Sprintf("password_file: %q\n", e.creds.passwordFile(name))
}

// dialController connects a raw client as the controller would (a
// client that may publish desired states, gates and commands), waits for
// the connection, and closes it at the end of the test. ctx bounds the
// test's publishes (30 s).
func (e *Env) dialController(clientID string) (*bus.Client, context.Context) {
	e.t.Helper()
	cfg := bus.Config{URLs: []string{e.BrokerURL()}, ClientID: clientID, CleanStart: true}
	if e.creds != nil {
		cfg.Username, cfg.Password = mosqController, []byte(e.creds.password(e.t, mosqController))
		cfg.ClientID = mosqController + "-" + clientID
	}
	c, err := bus.Dial(context.Background(), cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = c.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	e.t.Cleanup(cancel)
	if err := c.AwaitConnection(ctx); err != nil {
		e.t.Fatal(err)
	}
	return c, ctx
}
