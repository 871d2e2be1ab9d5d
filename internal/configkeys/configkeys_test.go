package configkeys

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Name    string        `mapstructure:"name"`
	Broker  []string      `mapstructure:"broker"`
	Timeout time.Duration `mapstructure:"timeout"`
	Since   time.Time     `mapstructure:"since"`
	TLS     struct {
		CA   string `mapstructure:"ca"`
		Cert string `mapstructure:"cert"`
	} `mapstructure:"tls"`
	Checks []struct {
		Type string `mapstructure:"type"`
		Unit string `mapstructure:"unit"`
	} `mapstructure:"checks"`
	Skip   string `mapstructure:"-"`
	hidden string
}

func TestKnown(t *testing.T) {
	got := Known(sample{})
	want := []string{"broker", "checks.type", "checks.unit", "name", "since", "timeout", "tls.ca", "tls.cert"}
	if !slices.Equal(got, want) {
		t.Errorf("Known = %v, want %v", got, want)
	}
}

func TestNearest(t *testing.T) {
	known := Known(sample{})
	for key, want := range map[string]string{
		"brokr":          "broker",
		"borker":         "broker", // a swap is one edit
		"BROKER_":        "broker",
		"tsl.ca":         "tls.ca",
		"tls.crt":        "tls.cert",
		"checks[3].tyep": "checks.type",
		"ca":             "tls.ca", // right key, wrong section
		"colour":         "",
		"x":              "",
		"timeouts":       "timeout",
	} {
		if got := Nearest(key, known); got != want {
			t.Errorf("Nearest(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestUnknown(t *testing.T) {
	known := Known(sample{})
	if err := Unknown("labd.yaml", []string{"name", "checks[0].type", "tls.ca"}, known); err != nil {
		t.Errorf("known keys refused: %v", err)
	}
	err := Unknown("labd.yaml", []string{"name", "brokr", "colour"}, known)
	var ue Error
	if !errors.As(err, &ue) {
		t.Fatalf("err %v is not an Error", err)
	}
	for _, w := range []string{`labd.yaml: unknown key "brokr": did you mean "broker"?`, `labd.yaml: unknown key "colour": no setting has this name`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q does not say %q", err, w)
		}
	}
}

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"a", "", 1}, {"kitten", "sitting", 3}, {"ab", "ba", 1}, {"broker", "brokr", 1}, {"tls", "tsl", 1}} {
		if got := distance(tc.a, tc.b); got != tc.d {
			t.Errorf("distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.d)
		}
	}
}
