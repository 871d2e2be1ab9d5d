package main

import (
	"strings"
	"testing"
)

func TestMatchFilter(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"homeassistant/status", "homeassistant/status", true},
		{"homeassistant/status", "homeassistant/status/x", false},
		{"homeassistant/#", "homeassistant", true},
		{"homeassistant/#", "homeassistant/a/b", true},
		{"a/+/c", "a/b/c", true},
		{"a/+/c", "a/b/d", false},
		{"a/+", "a", false},
		{"#", "$SYS/broker", false},
		{"$SYS/#", "$SYS/broker", true},
	} {
		if got := matchFilter(tc.filter, tc.topic); got != tc.want {
			t.Errorf("matchFilter(%q, %q) = %v", tc.filter, tc.topic, got)
		}
	}
}

func TestSidecarsNeedTheService(t *testing.T) {
	clearBrokerEnv(t)
	for _, args := range [][]string{{"--homeassistant"}, {"--webhook", "https://alerts.example/lab"}} {
		code, _, errOut := labctl(t, append([]string{"broker", "--controller=false", "--check-config"}, args...)...)
		if code != 2 || !strings.Contains(errOut, "which --controller=false turns off") {
			t.Errorf("%v with --controller=false: exit %d\n%s", args, code, errOut)
		}
	}
	if code, out, errOut := labctl(t, "broker", "--controller=false", "--check-config"); code != 0 {
		t.Errorf("--controller=false alone: exit %d\n%s%s", code, out, errOut)
	}
}
