package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/lab-fleet/lab/internal/configkeys"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// globals carries what every subcommand needs.
type globals struct {
	v      *viper.Viper
	out    io.Writer
	errOut io.Writer
	logger *slog.Logger

	command    string      // the command running, e.g. "labctl publish"
	brokerFlag *pflag.Flag // the running command's --broker, if it has one
}

func newGlobals(out, errOut io.Writer) *globals {
	v := viper.NewWithOptions(viper.EnvKeyReplacer(envNames{}))
	v.SetEnvPrefix("LAB")
	v.AutomaticEnv()
	return &globals{v: v, out: out, errOut: errOut}
}

// envNames maps a viper key to its environment variable, once prefixed
// ("LAB_BROKER.DATA_DIR" → LAB_BROKER_DATA_DIR). LAB_BROKER is hidden from
// viper: it names the broker to dial (brokerURLs reads it), and viper
// would take it to hide every broker.* key (a value at "broker" shadows
// the section), so that `labctl broker` ignored its config file's broker
// section whenever the shell had LAB_BROKER set.
type envNames struct{}

var envReplacer = strings.NewReplacer(".", "_", "-", "_")

func (envNames) Replace(key string) string {
	if key = envReplacer.Replace(key); key == "LAB_BROKER" {
		return "" // never set
	}
	return key
}

// init reads the config file named by --config (YAML or TOML, by its
// extension) and builds the logger. It runs before every subcommand.
// configKeys are every key a labctl config file may hold (docs/labctl.md).
func configKeys() []string {
	keys := []string{"log_level", keyRolloutsDB, keyLocalController, keyBroker, keyUsername, keyPasswordFile, keyPrefix,
		keyTLSCA, keyTLSClientCrt, keyTLSClientKey}
	keys = append(keys, brokerKeys...)
	return append(append(keys, controllerKeys...), sidecarKeys()...)
}

func (g *globals) init(cmd *cobra.Command) error {
	g.command = cmd.CommandPath()
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
		var inFile []string
		for _, k := range g.v.AllKeys() {
			if g.v.InConfig(k) {
				inFile = append(inFile, k)
			}
		}
		if err := configkeys.Unknown(path, inFile, configKeys()); err != nil {
			return usageError{err} // a setting the operator believes in force would be ignored
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
