package main

import "testing"

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
