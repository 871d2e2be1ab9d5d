package main

import (
	"context"

	"github.com/spf13/cobra"
)

// Home Assistant discovery: not yet wired (a stub until its package lands).

func addHomeAssistantFlags(g *globals, cmd *cobra.Command)                     {}
func bindHomeAssistantFlags(g *globals, cmd *cobra.Command)                    {}
func homeAssistantKeys() []string                                              { return nil }
func checkHomeAssistant(g *globals) error                                      { return nil }
func startHomeAssistant(ctx context.Context, g *globals, env sidecarEnv) error { return nil }
