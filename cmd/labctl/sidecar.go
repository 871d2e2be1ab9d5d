package main

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/proto"
)

// Sidecars are the optional parts of the controller service that watch the
// fleet view and tell others about it: webhooks (alerts.go) and Home
// Assistant's MQTT discovery (homeassistant.go). Both commands that run the
// service (labctl broker, labctl controller) add their flags and start
// them the same way.

// sidecarEnv is what a sidecar gets from the service it runs beside.
type sidecarEnv struct {
	fleet  *controller.Fleet
	bus    controller.Bus // publishes (retained or not) on the service's connection
	topics proto.Topics
	reg    *prometheus.Registry // the /metrics of the service's HTTP listener
	// subscribe delivers the messages of an MQTT filter outside the
	// fleet's topics (e.g. homeassistant/status) to handle, retained
	// ones included, again after every reconnect.
	subscribe func(ctx context.Context, filter string, handle func(topic string, payload []byte)) error
}

// addSidecarFlags adds every sidecar's flags to a service command.
func addSidecarFlags(g *globals, cmd *cobra.Command) {
	addAlertFlags(g, cmd)
	addHomeAssistantFlags(g, cmd)
}

// bindSidecarFlags binds them to their keys when the command runs.
func bindSidecarFlags(g *globals, cmd *cobra.Command) {
	bindAlertFlags(g, cmd)
	bindHomeAssistantFlags(g, cmd)
}

// sidecarKeys are the configuration keys of all sidecars (for the strict
// config check).
func sidecarKeys() []string { return append(alertKeys(), homeAssistantKeys()...) }

// checkSidecars validates the sidecars' settings before anything listens.
func checkSidecars(g *globals) error {
	return errors.Join(checkAlerts(g), checkHomeAssistant(g))
}

// sidecarsNeedTheService refuses sidecars asked for while the service
// they run in is off (labctl broker --controller=false).
func sidecarsNeedTheService(g *globals) error {
	hooks, _, _ := alertSettings(g)
	if len(hooks) > 0 || g.v.GetBool(keyHAEnabled) {
		return errors.New("--webhook and --homeassistant run in the controller service, which --controller=false turns off: " +
			"drop them here and give them to the labctl controller that drives this broker's rollouts")
	}
	return nil
}

// startSidecars starts the configured sidecars; they stop when ctx ends.
func startSidecars(ctx context.Context, g *globals, env sidecarEnv) error {
	if err := startAlerts(ctx, g, env); err != nil {
		return err
	}
	return startHomeAssistant(ctx, g, env)
}

// routes dispatches messages of extra filters on an MQTT client
// connection, whose one message callback sees everything.
type routes struct {
	mu sync.Mutex
	r  []route
}

type route struct {
	filter string
	handle func(topic string, payload []byte)
}

func (rs *routes) add(filter string, handle func(topic string, payload []byte)) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.r = append(rs.r, route{filter, handle})
}

// deliver hands a message to every route whose filter matches; it reports
// whether one did.
func (rs *routes) deliver(topic string, payload []byte) bool {
	rs.mu.Lock()
	var hs []func(string, []byte)
	for _, r := range rs.r {
		if matchFilter(r.filter, topic) {
			hs = append(hs, r.handle)
		}
	}
	rs.mu.Unlock()
	for _, h := range hs {
		h(topic, payload)
	}
	return len(hs) > 0
}

// matchFilter reports whether an MQTT topic matches a filter with + and #
// wildcards. Topics starting with $ match only filters that name it.
func matchFilter(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && !strings.HasPrefix(filter, "$") {
		return false
	}
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return true
		}
		if i >= len(ts) || (f != "+" && f != ts[i]) {
			return false
		}
	}
	return len(fs) == len(ts)
}
