package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/pki"
	"github.com/lab-fleet/lab/proto"
)

// TLS with client certificates: a node whose certificate's common name is
// its identity needs no password; a certificate from another CA is
// refused; a client without a certificate still authenticates with its
// password over TLS.
func TestTLSWithClientCertificates(t *testing.T) {
	e := NewEnv(t)
	ca, other := filepath.Join(e.Dir, "pki"), filepath.Join(e.Dir, "other-pki")
	for _, args := range [][]string{
		{"pki", "init", "--dir", ca},
		{"pki", "issue", "broker", "--dir", ca, "--host", "127.0.0.1"},
		{"pki", "init", "--dir", other},
		{"pki", "issue", "n1", "--dir", other},
		{"node", "add", "n1", "--groups", "web", "--identities", filepath.Join(e.Dir, "identities.yaml"), "--out", e.Dir, "--pki", ca},
		{"node", "add", "ops", "--role", "controller", "--identities", filepath.Join(e.Dir, "identities.yaml"), "--out", e.Dir},
	} {
		if code, out, errOut := e.Labctl(args...); code != 0 {
			t.Fatalf("labctl %v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	tlsPort, wsPort := freePort(t), freePort(t)
	e.startBrokerArgs("--identities", filepath.Join(e.Dir, "identities.yaml"),
		"--tls-listen", fmt.Sprintf("127.0.0.1:%d", tlsPort), "--ws-listen", fmt.Sprintf("127.0.0.1:%d", wsPort), "--tls-cert", filepath.Join(ca, "broker.crt"),
		"--tls-key", filepath.Join(ca, "broker.key"), "--tls-client-ca", filepath.Join(ca, "ca.crt"))
	waitPort(t, tlsPort)
	opsPW, _ := os.ReadFile(filepath.Join(e.Dir, "ops.password"))
	e.watch = newWatcher(t, e.BrokerURL(), "ops", strings.TrimSpace(string(opsPW)))
	tlsURL := fmt.Sprintf("tls://127.0.0.1:%d", tlsPort)

	// n1 over TLS with its certificate and no password.
	gen1, gen2 := e.Build("n1", 1), e.Build("n1", 2)
	n := e.NewNode("n1", []string{"web"}, gen1)
	b, _ := os.ReadFile(n.Config)
	cfg := strings.Replace(string(b), "broker: "+e.BrokerURL(), "broker: "+tlsURL, 1)
	if cfg == string(b) {
		t.Fatal("could not point the node at the TLS listener")
	}
	cfg += fmt.Sprintf("tls: {ca: %q, cert: %q, key: %q}\n", filepath.Join(ca, "ca.crt"), filepath.Join(ca, "n1.crt"), filepath.Join(ca, "n1.key"))
	if err := os.WriteFile(n.Config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.DumpOnFailure(n)
	n.Start()
	eventually(t, 30*time.Second, "n1 online over TLS", func() bool { return e.Watch().Online("n1") })

	// The controller over TLS with its password and no certificate.
	cmd := e.command(bin.labctl, "publish", "--id", "r-tls", "--key", e.KeyFile, "--toplevel", "n1="+gen2, "--timeout", "60s")
	cmd.Env = append(cmd.Env, "LAB_BROKER="+tlsURL, "LAB_USERNAME=ops", "LAB_PASSWORD_FILE="+filepath.Join(e.Dir, "ops.password"),
		"LAB_TLS_CA="+filepath.Join(ca, "ca.crt"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("publish over TLS: %v\n%s", err, out)
	}
	e.Watch().AwaitState(t, "n1", "r-tls", proto.StateSucceeded, 10*time.Second)

	// n1's name on a certificate from another CA: refused.
	tc, err := pki.ClientConfig(filepath.Join(ca, "ca.crt"), filepath.Join(other, "n1.crt"), filepath.Join(other, "n1.key"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := bus.Dial(context.Background(), bus.Config{URLs: []string{tlsURL}, ClientID: "n1", TLS: tc})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.AwaitConnection(ctx); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
	if !e.Watch().Online("n1") {
		t.Error("the impostor disturbed the real n1")
	}

	// WebSocket over TLS, for clients behind proxies that pass only HTTPS.
	roots, err := pki.ClientConfig(filepath.Join(ca, "ca.crt"), "", "")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := bus.Dial(context.Background(), bus.Config{URLs: []string{fmt.Sprintf("wss://127.0.0.1:%d", wsPort)}, ClientID: "ops-ws",
		Username: "ops", Password: opsPW[:len(strings.TrimSpace(string(opsPW)))], TLS: roots})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close(context.Background())
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := ws.AwaitConnection(wctx); err != nil {
		t.Fatalf("wss: %v", err)
	}
	if err := ws.Subscribe(wctx, proto.DefaultTopics.AllStatus()); err != nil {
		t.Fatalf("wss subscribe: %v", err)
	}
}
