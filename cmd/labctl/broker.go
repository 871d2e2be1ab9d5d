package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cast"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/lab-fleet/lab/broker"
	"github.com/lab-fleet/lab/broker/guard"
)

// Viper keys of the broker section (config file, LAB_BROKER_* env).
const (
	keyListen        = "broker.listen"
	keyDataDir       = "broker.data_dir"
	keyMaxPacketSize = "broker.max_packet_size"
	keyClientQueue   = "broker.client_queue"
	keyClientBufSize = "broker.client_buf_size"
	keySessionExpiry = "broker.session_expiry"
	keyIdentities    = "broker.identities"
	keyTLSListen     = "broker.tls_listen"
	keyWSListen      = "broker.ws_listen"
	keyTLSCert       = "broker.tls_cert"
	keyTLSKey        = "broker.tls_key"
	keyTLSClientCA   = "broker.tls_client_ca"
	keyJSONMirror    = "broker.json_mirror"

	// Limits before login (broker/guard).
	keyConnectTimeout   = "broker.connect_timeout"
	keyMaxPending       = "broker.max_pending"
	keyMaxPendingPer    = "broker.max_pending_per_address"
	keyConnectRate      = "broker.connect_rate"
	keyConnectBurst     = "broker.connect_burst"
	keyLoginSlowAfter   = "broker.login_slow_after"
	keyLoginBanAfter    = "broker.login_ban_after"
	keyLoginWindow      = "broker.login_window"
	keyLoginBanDuration = "broker.login_ban_duration"
	keyTrustedNetworks  = "broker.trusted_networks"
)

var brokerKeys = []string{keyListen, keyDataDir, keyMaxPacketSize, keyClientQueue, keyClientBufSize, keySessionExpiry, keyIdentities, keyBrokerURL,
	keyTLSListen, keyWSListen, keyTLSCert, keyTLSKey, keyTLSClientCA, keyJSONMirror,
	keyConnectTimeout, keyMaxPending, keyMaxPendingPer, keyConnectRate, keyConnectBurst,
	keyLoginSlowAfter, keyLoginBanAfter, keyLoginWindow, keyLoginBanDuration, keyTrustedNetworks}

// addGuardFlags defines the flags of the limits before login.
func addGuardFlags(g *globals, cmd *cobra.Command) {
	f := cmd.Flags()
	f.Duration("connect-timeout", guard.DefaultConnectTimeout, "close a connection that has not completed its TLS handshake and CONNECT within this `DURATION`")
	f.Int("max-pending", guard.DefaultMaxPending, "at most `N` connections waiting to log in, from all untrusted addresses together; more are closed at once")
	f.Int("max-pending-per-address", guard.DefaultMaxPendingPerAddr, "at most `N` connections waiting to log in from one address (an IPv6 /64)")
	f.Float64("connect-rate", guard.DefaultConnectRate, "the average `RATE` of new connections a second allowed from one address")
	f.Int("connect-burst", guard.DefaultConnectBurst, "`N` new connections allowed from one address at once, before --connect-rate applies")
	f.Int("login-slow-after", guard.DefaultSlowAfter, "after `N` failed logins from one address within --login-window, each refusal is held back (250ms doubling to 10s)")
	f.Int("login-ban-after", guard.DefaultBanAfter, "after `N` failed logins within --login-window: that username from that address, a person's (bcrypt) username from anywhere, and an address guessing 3+ usernames with no good login are refused for --login-ban-duration")
	f.Duration("login-window", guard.DefaultWindow, "the `DURATION` over which failed logins are counted")
	f.Duration("login-ban-duration", guard.DefaultBanDuration, "the `DURATION` of a ban")
	f.StringSlice("trusted-networks", []string{"127.0.0.0/8", "::1/128"}, "`NETWORKS` exempt from the per-address limits and bans (comma-separated; \"none\" trusts nobody: set it when a proxy or tunnel forwards connections from loopback)")
	for key, flag := range map[string]string{keyConnectTimeout: "connect-timeout", keyMaxPending: "max-pending", keyMaxPendingPer: "max-pending-per-address",
		keyConnectRate: "connect-rate", keyConnectBurst: "connect-burst", keyLoginSlowAfter: "login-slow-after", keyLoginBanAfter: "login-ban-after",
		keyLoginWindow: "login-window", keyLoginBanDuration: "login-ban-duration", keyTrustedNetworks: "trusted-networks"} {
		mustBind(g.v, key, cmd, flag)
	}
}

func newBrokerCmd(g *globals) *cobra.Command {
	var checkOnly bool
	var debugListen string
	cmd := &cobra.Command{
		Use:   "broker [--config FILE] [--listen ADDR] [--data-dir DIR]",
		Short: "Run the embedded MQTT broker until SIGINT or SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := brokerConfig(g.v)
			if err != nil {
				return usageError{err}
			}
			cfg.Logger = g.logger
			var svc *serviceSettings
			bindServiceFlags(g, cmd)
			bindHTTPFlags(g, cmd)
			bindSidecarFlags(g, cmd)
			if g.v.GetBool(keyControllerEnabled) {
				dir := defaultControllerDir()
				if cfg.DataDir != "" {
					dir = filepath.Join(cfg.DataDir, "controller")
				}
				st, err := readServiceSettings(g.v, dir)
				if err != nil {
					return usageError{err}
				}
				if err := checkSidecars(g); err != nil {
					return usageError{err}
				}
				svc = &st
			} else if err := sidecarsNeedTheService(g); err != nil {
				return usageError{err}
			}
			if checkOnly {
				return checkBrokerConfig(g, cfg)
			}
			metrics := prometheus.NewRegistry()
			if debugListen != "" {
				if err := serveDebug(cmd.Context(), g, debugListen, metrics); err != nil {
					return usageError{err}
				}
			}
			return runBroker(cmd.Context(), g, cfg, svc, metrics)
		},
	}
	f := cmd.Flags()
	f.String("listen", broker.DefaultListen, "TCP listen `ADDR` (host:port)")
	f.String("data-dir", "", "persistence `DIR` (bolt file broker.db inside); empty = in memory")
	f.String("identities", "", "identities `FILE`: who may connect and do what (labctl node add writes it; reloaded on change and on SIGHUP); without it every client may do anything")
	f.BoolVar(&checkOnly, "check-config", false, "validate the configuration and exit (0 valid, 2 invalid)")
	f.StringVar(&debugListen, "debug-listen", "", "serve Go's profiler (/debug/pprof/) and the broker's Prometheus metrics (/metrics) on `ADDR`, e.g. 127.0.0.1:6060 (keep it on loopback)")
	f.String("tls-listen", "", "also listen with TLS on `ADDR` (e.g. :8883); needs --tls-cert and --tls-key")
	f.String("ws-listen", "", "also listen with WebSocket over TLS on `ADDR` (e.g. :8884)")
	f.String("tls-cert", "", "broker certificate `FILE` (labctl pki issue broker --host ...)")
	f.String("tls-key", "", "broker private key `FILE`")
	f.String("tls-client-ca", "", "accept client certificates signed by this CA `FILE`; their common name is the identity")
	f.Bool("controller", true, "run the controller service beside the broker (it drives submitted rollouts; --controller=false for a broker alone)")
	mustBind(g.v, keyControllerEnabled, cmd, "controller")
	addServiceFlags(g, cmd, "`DIR` for the controller's rollouts and key (default <data-dir>/controller, else ~/.local/state/lab/controller)")
	addHTTPFlags(cmd, false)
	addSidecarFlags(g, cmd)
	f.Bool("json-mirror", true, "publish JSON copies of node status, presence, events and rollout state under <prefix>/json/ for generic MQTT clients (--json-mirror=false clears them)")
	mustBind(g.v, keyIdentities, cmd, "identities")
	for key, flag := range map[string]string{keyTLSListen: "tls-listen", keyWSListen: "ws-listen", keyTLSCert: "tls-cert", keyTLSKey: "tls-key", keyTLSClientCA: "tls-client-ca"} {
		mustBind(g.v, key, cmd, flag)
	}
	mustBind(g.v, keyListen, cmd, "listen")
	mustBind(g.v, keyDataDir, cmd, "data-dir")
	mustBind(g.v, keyJSONMirror, cmd, "json-mirror")
	addGuardFlags(g, cmd)
	return cmd
}

func mustBind(v *viper.Viper, key string, cmd *cobra.Command, flag string) {
	if err := v.BindPFlag(key, cmd.Flags().Lookup(flag)); err != nil {
		panic(err) // a programming error: the flag is defined just above
	}
}

// brokerConfig reads the broker keys strictly: a value of the wrong type is
// an error naming the key and where it came from (an unknown key in the
// file was refused before: globals.init).
func brokerConfig(v *viper.Viper) (broker.Config, error) {
	var cfg broker.Config
	var errs []error
	get := func(key string, conv func(any) error) {
		if raw := v.Get(key); raw != nil {
			if err := conv(raw); err != nil {
				errs = append(errs, fmt.Errorf("%s%s: %w", source(v, key), key, err))
			}
		}
	}
	get(keyListen, func(x any) (err error) { cfg.Listen, err = cast.ToStringE(x); return })
	get(keyDataDir, func(x any) (err error) { cfg.DataDir, err = cast.ToStringE(x); return })
	get(keyMaxPacketSize, func(x any) (err error) { cfg.MaxPacketSize, err = cast.ToUint32E(x); return })
	get(keyClientQueue, func(x any) (err error) { cfg.ClientQueue, err = cast.ToIntE(x); return })
	get(keyClientBufSize, func(x any) (err error) { cfg.ClientBufSize, err = cast.ToIntE(x); return })
	get(keySessionExpiry, func(x any) (err error) { cfg.SessionExpiry, err = toDuration(x); return })
	get(keyIdentities, func(x any) (err error) { cfg.Identities, err = cast.ToStringE(x); return })
	get(keyTLSListen, func(x any) (err error) { cfg.TLSListen, err = cast.ToStringE(x); return })
	get(keyWSListen, func(x any) (err error) { cfg.WSListen, err = cast.ToStringE(x); return })
	get(keyTLSCert, func(x any) (err error) { cfg.TLSCert, err = cast.ToStringE(x); return })
	get(keyTLSKey, func(x any) (err error) { cfg.TLSKey, err = cast.ToStringE(x); return })
	get(keyTLSClientCA, func(x any) (err error) { cfg.TLSClientCA, err = cast.ToStringE(x); return })
	get(keyJSONMirror, func(x any) error {
		on, err := cast.ToBoolE(x)
		cfg.NoJSONMirror = !on
		return err
	})
	get(keyConnectTimeout, func(x any) (err error) { cfg.Guard.ConnectTimeout, err = toDuration(x); return })
	get(keyMaxPending, func(x any) (err error) { cfg.Guard.MaxPending, err = toPositive(x); return })
	get(keyMaxPendingPer, func(x any) (err error) { cfg.Guard.MaxPendingPerAddr, err = toPositive(x); return })
	get(keyConnectRate, func(x any) (err error) { cfg.Guard.ConnectRate, err = cast.ToFloat64E(x); return })
	get(keyConnectBurst, func(x any) (err error) { cfg.Guard.ConnectBurst, err = toPositive(x); return })
	get(keyLoginSlowAfter, func(x any) (err error) { cfg.Guard.SlowAfter, err = toPositive(x); return })
	get(keyLoginBanAfter, func(x any) (err error) { cfg.Guard.BanAfter, err = toPositive(x); return })
	get(keyLoginWindow, func(x any) (err error) { cfg.Guard.Window, err = toDuration(x); return })
	get(keyLoginBanDuration, func(x any) (err error) { cfg.Guard.BanDuration, err = toDuration(x); return })
	get(keyTrustedNetworks, func(x any) error {
		items, err := cast.ToStringSliceE(x)
		if err != nil {
			return err
		}
		cfg.Guard.Trusted, err = guard.ParseTrusted(items)
		return err
	})
	cfg.Prefix = v.GetString(keyPrefix)
	return cfg, errors.Join(errs...)
}

// toPositive accepts whole numbers from 1 (0 would silently mean the
// default).
func toPositive(x any) (int, error) {
	n, err := cast.ToIntE(x)
	if err == nil && n < 1 {
		err = fmt.Errorf("%d is not a number from 1 up", n)
	}
	return n, err
}

// toDuration accepts "36h"-style strings only: a bare number is ambiguous.
func toDuration(x any) (time.Duration, error) {
	s, ok := x.(string)
	if !ok {
		return 0, fmt.Errorf("%v is not a duration string like \"168h\"", x)
	}
	return time.ParseDuration(s)
}

// source names where a key's value came from, as an error prefix.
func source(v *viper.Viper, key string) string {
	if v.InConfig(key) {
		return v.ConfigFileUsed() + ": "
	}
	return ""
}

func checkBrokerConfig(g *globals, cfg broker.Config) error {
	if err := cfg.Validate(); err != nil {
		return usageError{fmt.Errorf("invalid broker config:\n%w", err)}
	}
	fmt.Fprintf(g.out, "broker config ok: listen %s, data dir %q\n", cfg.Listen, cfg.DataDir)
	return nil
}

// serveDebug serves net/http/pprof, and the broker's metrics from reg
// (/metrics), on addr until ctx ends.
func serveDebug(ctx context.Context, g *globals, addr string, reg *prometheus.Registry) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--debug-listen: %w", err)
	}
	if ap, err := netip.ParseAddrPort(l.Addr().String()); err == nil && !ap.Addr().IsLoopback() {
		g.logger.Warn("the profiler listens beyond loopback: anyone who reaches it can read the broker's memory", "addr", l.Addr().String())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if reg != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	g.logger.Info("profiler listening", "addr", "http://"+l.Addr().String()+"/debug/pprof/")
	return nil
}

// runBroker serves until ctx ends or SIGINT/SIGTERM arrives, then closes
// the broker, which flushes its store.
func runBroker(ctx context.Context, g *globals, cfg broker.Config, svc *serviceSettings, metrics *prometheus.Registry) error {
	s, err := broker.New(cfg)
	if errors.Is(err, broker.ErrDataDirInUse) {
		return fmt.Errorf("%w; stop it or use another --data-dir (broker.data_dir)", err)
	}
	if err != nil {
		return err
	}
	defer s.Close()
	metrics.MustRegister(s.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := s.Start(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var svcDone <-chan struct{}
	if svc != nil {
		if svcDone, err = startInlineService(ctx, g, s, *svc, cfg, metrics); err != nil {
			return err
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for ctx.Err() == nil {
		select {
		case <-hup:
			if err := s.ReloadIdentities(); err != nil {
				g.logger.Error("SIGHUP: identities not reloaded", "err", err)
			}
			if n := s.LiftBans(); n > 0 {
				g.logger.Info("SIGHUP: login bans lifted", "bans", n)
			}
		case <-ctx.Done():
		}
	}
	g.logger.Info("broker shutting down", "cause", context.Cause(ctx))
	if svcDone != nil {
		select { // its rollouts' records say running: the next start resumes them
		case <-svcDone:
		case <-time.After(10 * time.Second):
			g.logger.Warn("the controller service did not stop within 10s")
		}
	}
	return s.Close()
}
