package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lab-fleet/lab/internal/pki"
)

func TestLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8380": true, "localhost:8380": true, "[::1]:8380": true, "127.3.4.5:1": true,
		":8380": false, "0.0.0.0:8380": false, "[::]:8380": false, "lab.example:8380": false, "nonsense": false,
	} {
		if got := loopbackAddr(addr); got != want {
			t.Errorf("loopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}

// TestHTTPBeyondLoopbackNeedsTLSAndLogins: a dashboard address beyond
// loopback without HTTPS and logins is refused as a usage error, before the
// broker listens on anything.
func TestHTTPBeyondLoopbackNeedsTLSAndLogins(t *testing.T) {
	clearBrokerEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut syncBuffer
	code := run(ctx, []string{"broker", "--listen", "127.0.0.1:0", "--http", "0.0.0.0:0", "--data-dir", t.TempDir()}, &out, &errOut)
	if code != 2 {
		t.Fatalf("exit %d, want 2 (usage)\n%s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "listens beyond loopback") || !strings.Contains(errOut.String(), "--http-tls-cert") {
		t.Errorf("the refusal does not say what is needed:\n%s", errOut.String())
	}
	if strings.Contains(errOut.String(), "dashboard listening") {
		t.Errorf("the dashboard listened before refusing:\n%s", errOut.String())
	}
}

// TestHTTPSDashboardAsksForLogins: with HTTPS and the broker's identities
// the dashboard asks for a login even on loopback, a viewer reads but may
// not act, a controller may act, and /metrics carries the broker's counters.
func TestHTTPSDashboardAsksForLogins(t *testing.T) {
	clearBrokerEnv(t)
	dir := t.TempDir()
	identities := addIdentities(t, dir, "grafana=viewer", "ops=controller")
	password := func(name string) string { return readPassword(t, dir, name) }
	pkiDir := t.TempDir()
	if err := pki.Init(pkiDir, "lab test CA", 1); err != nil {
		t.Fatal(err)
	}
	if err := pki.Issue(pkiDir, "server", []string{"127.0.0.1"}, 1); err != nil {
		t.Fatal(err)
	}

	_, errOut := startBroker(t, "--identities", identities, "--http", "127.0.0.1:0",
		"--http-tls-cert", filepath.Join(pkiDir, "server.crt"), "--http-tls-key", filepath.Join(pkiDir, "server.key"))
	var base string
	re := regexp.MustCompile(`msg="dashboard listening" url=(\S+) login=(\S+)`)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(errOut.String()); m != nil {
			if m[2] != "true" {
				t.Fatalf("login=%s over HTTPS with identities", m[2])
			}
			base = strings.TrimSuffix(m[1], "/")
			break
		}
	}
	if !strings.HasPrefix(base, "https://127.0.0.1:") {
		t.Fatalf("dashboard URL %q\n%s", base, errOut.String())
	}

	ca, err := os.ReadFile(filepath.Join(pkiDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		t.Fatal("ca.crt holds no certificate")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	do := func(method, path, user string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		if user != "" {
			req.SetBasicAuth(user, password(user))
		}
		if method == http.MethodPost {
			req.Header.Set("X-Lab-Action", "1")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, body := do("GET", "/api/fleet", ""); code != http.StatusUnauthorized {
		t.Errorf("no login: %d %s", code, body)
	}
	if code, body := do("GET", "/api/fleet", "grafana"); code != http.StatusOK || !strings.Contains(body, "{") {
		t.Errorf("viewer reads the fleet: %d %s", code, body)
	}
	if code, body := do("POST", "/api/rollouts/r-none/cancel", "grafana"); code != http.StatusForbidden {
		t.Errorf("viewer cancels: %d %s", code, body)
	}
	if code, body := do("POST", "/api/rollouts/r-none/cancel", "ops"); code != http.StatusNotFound {
		t.Errorf("controller cancels an unknown rollout: %d %s, want 404", code, body)
	}
	if code, body := do("GET", "/metrics", "grafana"); code != http.StatusOK || !strings.Contains(body, "lab_broker_clients_connected") {
		t.Errorf("/metrics: %d %.300s", code, body)
	}
}
