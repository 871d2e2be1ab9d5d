package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// globals carries what every subcommand needs.
type globals struct {
	v      *viper.Viper
	out    io.Writer
	errOut io.Writer
	logger *slog.Logger
}

func newGlobals(out, errOut io.Writer) *globals {
	v := viper.New()
	v.SetEnvPrefix("LAB")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	v.AutomaticEnv()
	return &globals{v: v, out: out, errOut: errOut}
}

// init reads the config file named by --config (YAML or TOML, by its
// extension) and builds the logger. It runs before every subcommand.
func (g *globals) init(cmd *cobra.Command) error {
	if err := g.v.BindPFlag("log_level", cmd.Flags().Lookup("log-level")); err != nil {
		return err
	}
	if err := g.v.BindPFlag(keyRolloutsDB, cmd.Flags().Lookup("rollouts-db")); err != nil {
		return err
	}
	if path, _ := cmd.Flags().GetString("config"); path != "" {
		g.v.SetConfigFile(path)
		if err := g.v.ReadInConfig(); err != nil {
			return usageError{fmt.Errorf("read config %s: %w", path, err)}
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.v.GetString("log_level"))); err != nil {
		return usageError{fmt.Errorf("log_level: %w", err)}
	}
	h := slog.NewTextHandler(g.errOut, &slog.HandlerOptions{Level: level})
	g.logger = slog.New(h)
	return nil
}
