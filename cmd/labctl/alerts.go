package main

import (
	"context"

	"github.com/spf13/cobra"
)

// Webhook alerts: not yet wired (a stub until the alert package lands).

func addAlertFlags(g *globals, cmd *cobra.Command)                      {}
func bindAlertFlags(g *globals, cmd *cobra.Command)                     {}
func alertKeys() []string                                               { return nil }
func checkAlerts(g *globals) error                                      { return nil }
func startAlerts(ctx context.Context, g *globals, env sidecarEnv) error { return nil }
