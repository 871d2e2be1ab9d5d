// Command labd is lab's node daemon: one per machine. It holds an outbound
// MQTT connection, applies the signed desired state published for it, runs
// its health checks and rolls back on failure (package node).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/lab-fleet/lab/node"
	"github.com/lab-fleet/lab/node/nixsys"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

// Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration, 3
// --check-connect: the broker did not accept the connection.
const (
	exitError   = 1
	exitConfig  = 2
	exitConnect = 3
)

func main() {
	nixsys.MaybeRunHelper() // the detached activation helper is this binary too
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

type configError struct{ error }

// connectError is a --check-connect that the broker refused (exit 3).
type connectError struct{ error }

func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	cmd := newRootCmd(out, errOut)
	cmd.SetArgs(args)
	cmd.SetOut(out)
	cmd.SetErr(errOut)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(errOut, "labd: %v\n", err)
		var ce configError
		if errors.As(err, &ce) {
			return exitConfig
		}
		var cc connectError
		if errors.As(err, &cc) {
			return exitConnect
		}
		return exitError
	}
	return 0
}

// newRootCmd is labd's command line, writing to out and errOut.
func newRootCmd(out, errOut io.Writer) *cobra.Command {
	v := viper.New()
	v.SetEnvPrefix("LAB")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	v.AutomaticEnv()
	var checkOnly, checkConnect bool
	cmd := &cobra.Command{
		Use:   "labd [--config FILE]",
		Short: "lab's node daemon: applies signed desired state, checks health, rolls back",
		Long: `labd connects to the lab broker and keeps the machine on the system its
operator published for it: it realises the closure, moves the system profile,
runs switch-to-configuration (detached, so a restart of labd cannot kill it),
runs the local health checks and rolls back to the previous system when
activation or a check fails. Its status is retained on the broker.

Every config key can be set in the config file (YAML or TOML), as a flag
where one exists, or as an environment variable LAB_<KEY> (dots become
underscores, e.g. LAB_TIMEOUTS_FETCH=45m).`,
		Example: `  labd --config /etc/labd/labd.yaml
  labd --config /etc/labd/labd.yaml --check-config
  labd --config /etc/labd/labd.yaml --check-config --check-connect`,
		Version:       version,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(v, cmd, errOut)
			if err != nil {
				return configError{err}
			}
			if checkOnly || checkConnect {
				for _, w := range cfg.Warnings() {
					fmt.Fprintf(errOut, "labd: warning: %s\n", w)
				}
				fmt.Fprintf(out, "labd config ok: node %s, groups %v, broker %v, %d checks\n", cfg.Name, cfg.Groups, cfg.Broker, len(cfg.Checks))
				if !checkConnect {
					return nil
				}
				if err := node.CheckConnect(cmd.Context(), cfg, 15*time.Second); err != nil {
					return connectError{err}
				}
				fmt.Fprintf(out, "broker %v accepted node %s: credentials and certificates are good\n", cfg.Broker, cfg.Name)
				return nil
			}
			d, err := node.New(cfg, nil)
			if err != nil {
				if errors.Is(err, node.ErrInvalidConfig) {
					return configError{err}
				}
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			err = d.Run(ctx)
			if errors.Is(err, node.ErrRestart) {
				fmt.Fprintln(errOut, "labd:", err)
				return nil // exit 0: the supervisor (Restart=always) starts the new labd
			}
			return err
		},
	}
	f := cmd.Flags()
	f.String("config", "", "config `FILE` (YAML or TOML)")
	f.BoolVar(&checkOnly, "check-config", false, "validate the configuration and exit (0 valid, 2 invalid)")
	f.BoolVar(&checkConnect, "check-connect", false, "with --check-config: also connect to the broker as this node and say whether it accepts the credentials and certificates "+
		"(exit 3 if not; a running labd is disconnected for a moment)")
	f.String("name", "", "node name (default: the config's name)")
	f.String("log-level", "info", "debug, info, warn or error")
	_ = v.BindPFlag("name", f.Lookup("name"))
	_ = v.BindPFlag("log_level", f.Lookup("log-level"))
	return cmd
}

// newLogger builds the slog logger from log_level.
func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log_level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
