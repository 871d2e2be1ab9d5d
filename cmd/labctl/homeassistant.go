package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cast"
	"github.com/spf13/cobra"

	"github.com/lab-fleet/lab/broker/access"
	"github.com/lab-fleet/lab/internal/homeassistant"
)

// Viper keys of Home Assistant's discovery (config file,
// LAB_CONTROLLER_HOMEASSISTANT_* env).
const (
	keyHAEnabled = "controller.homeassistant.enabled" // --homeassistant
	keyHAPrefix  = "controller.homeassistant.prefix"  // --homeassistant-prefix
)

func homeAssistantKeys() []string { return []string{keyHAEnabled, keyHAPrefix} }

func addHomeAssistantFlags(g *globals, cmd *cobra.Command) {
	f := cmd.Flags()
	f.Bool("homeassistant", false, "announce every machine to Home Assistant by MQTT discovery: a device with its system as an update, its connection, its problems, its last switch (docs/homeassistant.md)")
	f.String("homeassistant-prefix", homeassistant.DefaultPrefix, "Home Assistant's discovery `PREFIX` (its MQTT integration's discovery prefix)")
}

func bindHomeAssistantFlags(g *globals, cmd *cobra.Command) {
	mustBind(g.v, keyHAEnabled, cmd, "homeassistant")
	mustBind(g.v, keyHAPrefix, cmd, "homeassistant-prefix")
}

// homeAssistantSettings reads the keys strictly.
func homeAssistantSettings(g *globals) (enabled bool, prefix string, err error) {
	v := g.v
	var errs []error
	if enabled, err = cast.ToBoolE(v.Get(keyHAEnabled)); err != nil {
		errs = append(errs, fmt.Errorf("%s%s: want true or false: %w", source(v, keyHAEnabled), keyHAEnabled, err))
	}
	if prefix, err = cast.ToStringE(v.Get(keyHAPrefix)); err != nil {
		errs = append(errs, fmt.Errorf("%s%s: want a topic prefix: %w", source(v, keyHAPrefix), keyHAPrefix, err))
	} else if prefix == "" {
		prefix = homeassistant.DefaultPrefix
	}
	if err := homeassistant.ValidPrefix(prefix); err != nil {
		errs = append(errs, fmt.Errorf("%s%s: %w", source(v, keyHAPrefix), keyHAPrefix, err))
	}
	return enabled, prefix, errors.Join(errs...)
}

func checkHomeAssistant(g *globals) error {
	_, _, err := homeAssistantSettings(g)
	return err
}

func startHomeAssistant(ctx context.Context, g *globals, env sidecarEnv) error {
	enabled, prefix, err := homeAssistantSettings(g)
	if err != nil {
		return usageError{err}
	}
	if !enabled {
		return nil
	}
	if prefix != access.HomeAssistantPrefix {
		g.logger.Warn("home assistant: lab's access rules (labctl broker --identities, labctl acl export) cover "+
			access.HomeAssistantPrefix+"/# only: with identities, Home Assistant (a viewer) may not read this prefix, nor labctl controller "+
			"publish there (a mosquitto acl_file can be extended by hand)", "prefix", prefix)
	}
	p, err := homeassistant.New(homeassistant.Config{Fleet: env.fleet, Bus: env.bus, Topics: env.topics, Prefix: prefix, Logger: g.logger})
	if err != nil {
		return usageError{err}
	}
	if err := env.subscribe(ctx, p.BirthTopic(), p.HandleBirth); err != nil {
		return fmt.Errorf("home assistant: subscribe to its birth topic %s: %w", p.BirthTopic(), err)
	}
	// The states an earlier run left: machines gone since are removed.
	if err := env.subscribe(ctx, p.RetainedFilter(), p.HandleRetained); err != nil {
		return fmt.Errorf("home assistant: subscribe to %s: %w", p.RetainedFilter(), err)
	}
	go func() { _ = p.Run(ctx) }()
	return nil
}
