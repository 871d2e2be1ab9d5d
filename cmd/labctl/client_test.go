package main

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/lab-fleet/lab/broker"
)

// clearBrokerEnv unsets the broker settings the test's own environment
// may carry.
func clearBrokerEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{"LAB_BROKER", "LAB_BROKER_URL", "LAB_USERNAME", "LAB_PASSWORD_FILE"} {
		t.Setenv(k, "")
	}
}

// TestBrokerSpellings: the broker to dial is named as in labd (broker,
// LAB_BROKER) or by the older spellings (broker.url, LAB_BROKER_URL), with
// flag over env over file. Every URL here has a scheme the bus rejects at
// once, so the error names the URL labctl chose.
func TestBrokerSpellings(t *testing.T) {
	for _, tc := range []struct {
		name       string
		env        map[string]string
		file, body string // config file name and content ("" = none)
		flag       string
		want       string // in the error
	}{
		{name: "LAB_BROKER", env: map[string]string{"LAB_BROKER": "bogus://env"}, want: "bogus://env"},
		{name: "LAB_BROKER_URL alias", env: map[string]string{"LAB_BROKER_URL": "bogus://env-url"}, want: "bogus://env-url"},
		{name: "LAB_BROKER over LAB_BROKER_URL", env: map[string]string{"LAB_BROKER": "bogus://env", "LAB_BROKER_URL": "bogus://env-url"}, want: "bogus://env"},
		{name: "yaml broker", file: "c.yaml", body: "broker: bogus://file\n", want: "bogus://file"},
		{name: "yaml broker list", file: "c.yaml", body: "broker: [bogus://first, mqtt://127.0.0.1:1]\n", want: "bogus://first"},
		{name: "toml broker", file: "c.toml", body: "broker = \"bogus://toml\"\n", want: "bogus://toml"},
		{name: "broker.url alias", file: "c.yaml", body: "broker:\n  url: bogus://section\n  listen: 127.0.0.1:1884\n", want: "bogus://section"},
		{name: "toml broker.url alias", file: "c.toml", body: "[broker]\nurl = \"bogus://section\"\n", want: "bogus://section"},
		{name: "env over file", env: map[string]string{"LAB_BROKER_URL": "bogus://env-url"}, file: "c.yaml", body: "broker: bogus://file\n", want: "bogus://env-url"},
		{name: "flag over env", env: map[string]string{"LAB_BROKER": "bogus://env"}, flag: "bogus://flag", want: "bogus://flag"},
		{name: "not a URL", file: "c.yaml", body: "broker: {url: [1, 2]}\n", want: "broker.url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearBrokerEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := []string{"status"}
			if tc.file != "" {
				args = append(args, "--config", writeFile(t, tc.file, tc.body))
			}
			if tc.flag != "" {
				args = append(args, "--broker", tc.flag)
			}
			code, _, errOut := labctl(t, args...)
			if code != exitUsage || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 naming %s", code, errOut, tc.want)
			}
		})
	}
}

// TestBrokerFromConfigFile connects to a real broker named by the config
// file's broker key, labd's spelling.
func TestBrokerFromConfigFile(t *testing.T) {
	clearBrokerEnv(t)
	s, err := broker.New(broker.Config{Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	cfg := writeFile(t, "labctl.yaml", "broker: mqtt://"+s.Addr()+"\n")
	code, out, errOut := labctl(t, "status", "--config", cfg)
	if code != 0 {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
}

// TestLABBrokerKeepsBrokerSection: LAB_BROKER (the broker labctl dials) in
// the environment leaves `labctl broker`'s own settings, from the file and
// the environment, in force.
func TestLABBrokerKeepsBrokerSection(t *testing.T) {
	clearBrokerEnv(t)
	t.Setenv("LAB_BROKER", "mqtt://broker.lan:1883")
	t.Setenv("LAB_BROKER_DATA_DIR", "/var/lib/lab-env")
	cfg := writeFile(t, "c.yaml", "broker:\n  listen: 127.0.0.1:1999\n")
	code, out, errOut := labctl(t, "broker", "--config", cfg, "--check-config")
	if code != 0 || !strings.Contains(out, `listen 127.0.0.1:1999, data dir "/var/lib/lab-env"`) {
		t.Errorf("exit %d\n%s%s; want the file's listen and the env's data dir", code, out, errOut)
	}
}
