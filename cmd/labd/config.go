package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/lab-fleet/lab/internal/configkeys"
	"github.com/lab-fleet/lab/internal/pki"
	"github.com/lab-fleet/lab/node"
	"github.com/lab-fleet/lab/node/health"
	"github.com/lab-fleet/lab/node/hook"
	"github.com/lab-fleet/lab/proto"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// fileConfig is the shape of labd's config file; every key is documented
// in docs/labd.md.
type fileConfig struct {
	Name         string         `mapstructure:"name"`
	Groups       []string       `mapstructure:"groups"`
	Broker       []string       `mapstructure:"broker"`
	Username     string         `mapstructure:"username"`
	PasswordFile string         `mapstructure:"password_file"`
	Prefix       string         `mapstructure:"prefix"`
	StateDir     string         `mapstructure:"state_dir"`
	Profile      string         `mapstructure:"profile"`
	Nix          nixConfig      `mapstructure:"nix"`
	Checks       []health.Check `mapstructure:"checks"`
	Hooks        hook.Set       `mapstructure:"hooks"`
	// CheckInterval is a duration or "off".
	CheckInterval string `mapstructure:"check_interval"`
	Timeouts      struct {
		Fetch    time.Duration `mapstructure:"fetch"`
		Activate time.Duration `mapstructure:"activate"`
		Confirm  time.Duration `mapstructure:"confirm"`
	} `mapstructure:"timeouts"`
	TrustedKeys   []string `mapstructure:"trusted_keys"`
	CtlKeys       []string `mapstructure:"controller_keys"`
	BootIDFile    string   `mapstructure:"boot_id_file"`
	SSHHostKeys   string   `mapstructure:"ssh_host_keys"`
	RebootCommand []string `mapstructure:"reboot_command"`
	LabdPath      string   `mapstructure:"labd_path"`
	TLS           struct {
		CA   string `mapstructure:"ca"`
		Cert string `mapstructure:"cert"`
		Key  string `mapstructure:"key"`
	} `mapstructure:"tls"`
	LogLevel      string        `mapstructure:"log_level"`
	KeepAlive     time.Duration `mapstructure:"keepalive"`
	SessionExpiry time.Duration `mapstructure:"session_expiry"`
	Machine       struct {
		Role         string        `mapstructure:"role"`
		RebootOrder  int           `mapstructure:"reboot_order"`
		Dependencies []string      `mapstructure:"dependencies"`
		RebootDelay  time.Duration `mapstructure:"reboot_delay"`
		Criticality  string        `mapstructure:"criticality"`
	} `mapstructure:"machine"`
	Metrics struct {
		TextfileDir      string        `mapstructure:"textfile_dir"`
		TextfileInterval time.Duration `mapstructure:"textfile_interval"`
	} `mapstructure:"metrics"`
	Secrets struct {
		Dir            string   `mapstructure:"dir"`
		IdentityFile   string   `mapstructure:"identity_file"`
		RestartCommand []string `mapstructure:"restart_command"`
	} `mapstructure:"secrets"`
}

type nixConfig struct {
	Options []string `mapstructure:"options"`
	Env     []string `mapstructure:"env"`
	Detach  string   `mapstructure:"detach"`
	BinDir  string   `mapstructure:"bin_dir"`
}

// knownKeys are the keys a config file may hold.
var knownKeys = configkeys.Known(fileConfig{})

// loadConfig reads the file (if any), env and flags, decodes strictly
// (unknown keys and wrong types are errors naming the key) and validates.
func loadConfig(v *viper.Viper, cmd *cobra.Command, logOut io.Writer) (node.Config, error) {
	if path, _ := cmd.Flags().GetString("config"); path != "" {
		v.SetConfigFile(path)
		if err := v.ReadInConfig(); err != nil {
			return node.Config{}, fmt.Errorf("read config %s: %w", path, err)
		}
	}
	for _, k := range []string{"name", "broker", "username", "password_file", "prefix", "state_dir", "profile",
		"timeouts.fetch", "timeouts.activate", "timeouts.confirm", "boot_id_file", "log_level", "keepalive", "session_expiry",
		"nix.detach", "nix.bin_dir", "metrics.textfile_dir", "metrics.textfile_interval", "check_interval",
		"secrets.dir", "secrets.identity_file"} {
		_ = v.BindEnv(k)
	}
	_ = v.BindEnv("broker", "LAB_BROKER_URL") // labctl's older spelling, after LAB_BROKER (docs/labctl.md)
	var fc fileConfig
	var md mapstructure.Metadata
	err := v.Unmarshal(&fc, func(dc *mapstructure.DecoderConfig) {
		dc.Metadata = &md
		dc.WeaklyTypedInput = true
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(stringToDuration, stringToSlice)
	})
	if err != nil {
		err = fmt.Errorf("config %s: %w", v.ConfigFileUsed(), err)
	}
	if err = errors.Join(err, configkeys.Unknown(v.ConfigFileUsed(), md.Unused, knownKeys)); err != nil {
		return node.Config{}, err // each unknown key names the file itself
	}
	logger, err := newLogger(orDefault(fc.LogLevel, "info"), logOut)
	if err != nil {
		return node.Config{}, err
	}
	cfg := node.Config{
		Name: fc.Name, Groups: fc.Groups, Broker: fc.Broker, Username: fc.Username, PasswordFile: fc.PasswordFile,
		Prefix: fc.Prefix, StateDir: fc.StateDir, Checks: fc.Checks,
		FetchTimeout: fc.Timeouts.Fetch, ActivateTimeout: fc.Timeouts.Activate, ConfirmTimeout: fc.Timeouts.Confirm,
		TrustedKeys: fc.TrustedKeys, ControllerKeys: fc.CtlKeys, BootIDFile: fc.BootIDFile, RebootCommand: fc.RebootCommand, KeepAlive: fc.KeepAlive, SessionExpiry: fc.SessionExpiry,
		MetricsTextfileDir: fc.Metrics.TextfileDir, MetricsInterval: fc.Metrics.TextfileInterval,
		Version: version, Logger: logger,
	}
	cfg.Hooks = fc.Hooks
	cfg.SSHHostKeys = fc.SSHHostKeys
	cfg.Secrets = node.SecretsConfig{Dir: fc.Secrets.Dir, IdentityFile: fc.Secrets.IdentityFile, RestartCommand: fc.Secrets.RestartCommand}
	switch ci := fc.CheckInterval; ci {
	case "":
	case "off":
		cfg.CheckInterval = -1
	default:
		d, err := time.ParseDuration(ci)
		if err != nil || d <= 0 {
			return cfg, fmt.Errorf("%w: check_interval: %q: want a duration such as 5m, or off", node.ErrInvalidConfig, ci)
		}
		cfg.CheckInterval = d
	}
	if t := fc.TLS; t.CA != "" || t.Cert != "" || t.Key != "" {
		tc, err := pki.ClientConfig(t.CA, t.Cert, t.Key)
		if err != nil {
			return cfg, fmt.Errorf("%w: tls: %v", node.ErrInvalidConfig, err)
		}
		cfg.TLS = tc
	}
	if fc.LabdPath != "" {
		cfg.RestartCheck = restartCheck(v.ConfigFileUsed())
	}
	m := fc.Machine
	cfg.Machine = proto.Machine{Role: m.Role, RebootOrder: m.RebootOrder, Dependencies: m.Dependencies,
		RebootDelay: uint32(m.RebootDelay / time.Second), Criticality: m.Criticality}
	cfg.Nix.Profile, cfg.Nix.Options, cfg.Nix.Env, cfg.Nix.Detach, cfg.Nix.NixBinDir = fc.Profile, fc.Nix.Options, fc.Nix.Env, fc.Nix.Detach, fc.Nix.BinDir
	if err := cfg.Validate(); err != nil {
		if v.ConfigFileUsed() == "" {
			return cfg, fmt.Errorf("no config file given (labd --config FILE), and the environment (LAB_<KEY>) does not complete the configuration: %w", err)
		}
		return cfg, err
	}
	return cfg, nil
}

// restartCheck re-reads labd_path from the config file after an
// execution: when the activation installed a configuration that runs
// another labd, this one must give way to it.
func restartCheck(file string) func() (bool, string) {
	self, err := os.Executable()
	if err == nil {
		self, _ = filepath.EvalSymlinks(self)
	}
	return func() (bool, string) {
		if file == "" || self == "" {
			return false, ""
		}
		v := viper.New()
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return false, "" // a broken new config: keep running what works
		}
		want := v.GetString("labd_path")
		if want == "" {
			return false, ""
		}
		if resolved, err := filepath.EvalSymlinks(want); err == nil {
			want = resolved
		}
		if want != self {
			return true, fmt.Sprintf("the configuration now runs %s, this is %s", want, self)
		}
		return false, ""
	}
}

// stringToDuration parses durations and says what a good one looks like.
func stringToDuration(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != reflect.TypeOf(time.Duration(0)) {
		return data, nil
	}
	d, err := time.ParseDuration(data.(string))
	if err != nil {
		return nil, fmt.Errorf("invalid duration %q (write it like 30s, 10m or 1h30m)", data)
	}
	return d, nil
}

// stringToSlice lets a single string stand for a one-element list
// (broker: mqtt://x:1883, or LAB_BROKER=mqtt://x:1883).
func stringToSlice(from, to reflect.Type, data any) (any, error) {
	if from.Kind() == reflect.String && to.Kind() == reflect.Slice && to.Elem().Kind() == reflect.String {
		if s := data.(string); s != "" {
			return []string{s}, nil
		}
		return []string{}, nil
	}
	return data, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
