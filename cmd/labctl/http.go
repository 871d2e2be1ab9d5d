package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/lab-fleet/lab/broker/access"
	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/dashboard"
	"github.com/lab-fleet/lab/internal/metrics"
)

// Viper keys of the controller's HTTP listener.
const (
	keyHTTP           = "controller.http"
	keyHTTPCert       = "controller.http_tls_cert"
	keyHTTPKey        = "controller.http_tls_key"
	keyHTTPIdentities = "controller.http_identities"
)

// defaultHTTP is the dashboard's default address: loopback only.
const defaultHTTP = "localhost:8380"

func addHTTPFlags(cmd *cobra.Command, identities bool) {
	f := cmd.Flags()
	f.String("http", defaultHTTP, "serve the dashboard and /metrics on `ADDR` (\"\" = off); beyond loopback it needs --http-tls-cert/--http-tls-key and logs in with the broker's viewer and controller identities")
	f.String("http-tls-cert", "", "certificate `FILE` of the dashboard's HTTPS listener (labctl pki issue broker --host ... makes one)")
	f.String("http-tls-key", "", "private key `FILE` of the dashboard's HTTPS listener")
	if identities {
		f.String("http-identities", "", "identities `FILE` whose viewers and controllers may log in to the dashboard (the broker's, as labctl node add writes it)")
	}
}

func bindHTTPFlags(g *globals, cmd *cobra.Command) {
	mustBind(g.v, keyHTTP, cmd, "http")
	mustBind(g.v, keyHTTPCert, cmd, "http-tls-cert")
	mustBind(g.v, keyHTTPKey, cmd, "http-tls-key")
	if cmd.Flags().Lookup("http-identities") != nil {
		mustBind(g.v, keyHTTPIdentities, cmd, "http-identities")
	}
}

// loginFunc adapts a login check to the dashboard.
type loginFunc func(remote, user string, password []byte) (access.Identity, error)

func (f loginFunc) Login(remote, user string, password []byte) (string, error) {
	id, err := f(remote, user, password)
	if err != nil {
		return "", fmt.Errorf("%w: %v", dashboard.ErrLogin, err)
	}
	switch id.Role {
	case access.RoleViewer:
		return dashboard.RoleViewer, nil
	case access.RoleController:
		return dashboard.RoleController, nil
	}
	return "", fmt.Errorf("%w: %s is a %s identity, not a viewer or controller", dashboard.ErrLogin, id.Name, id.Role)
}

// httpSettings are what serveHTTP needs besides the config keys.
type httpSettings struct {
	fleet   *controller.Fleet
	service dashboard.Service
	login   loginFunc // nil: no identities to log in with
	reg     *prometheus.Registry
}

// serveHTTP serves the dashboard and the metrics on the configured
// address until ctx ends. A busy default address is a warning (the
// broker matters more than its window); an address given is not.
func serveHTTP(ctx context.Context, g *globals, hs httpSettings) error {
	addr := g.v.GetString(keyHTTP)
	if addr == "" {
		return nil
	}
	cert, key := g.v.GetString(keyHTTPCert), g.v.GetString(keyHTTPKey)
	if (cert == "") != (key == "") {
		return usageError{errors.New("--http-tls-cert and --http-tls-key go together")}
	}
	// Whether the address is beyond loopback is decided before listening:
	// an address that needs HTTPS and logins is never open without them.
	loopback := loopbackAddr(addr)
	cfg := dashboard.Config{Fleet: hs.fleet, Service: hs.service, Logger: g.logger}
	if hs.login != nil && (!loopback || cert != "") {
		// On plain-HTTP loopback the machine's users are trusted, as the
		// broker's limits trust them; HTTPS means it is reached from
		// elsewhere (a port forward, a proxy), so it asks for logins.
		cfg.Auth = hs.login
	}
	if !loopback && (cert == "" || cfg.Auth == nil) {
		return usageError{fmt.Errorf("--http %s listens beyond loopback: that needs HTTPS (--http-tls-cert, --http-tls-key) and logins (the broker's --identities, or labctl controller's --http-identities)", addr)}
	}
	var tlsConfig *tls.Config
	if cert != "" {
		c, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return usageError{fmt.Errorf("--http-tls-cert/--http-tls-key: %w", err)}
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if addr == defaultHTTP && !g.v.IsSet(keyHTTP) && errors.Is(err, syscall.EADDRINUSE) {
			g.logger.Warn("dashboard not served: its default address is in use (set --http ADDR, or --http \"\" to turn it off)", "addr", addr, "err", err)
			return nil
		}
		return usageError{fmt.Errorf("--http: %w", err)}
	}
	reg := hs.reg
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	reg.MustRegister(metrics.NewFleetCollector(hs.fleet))
	cfg.Metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	dash := dashboard.New(cfg)
	go dash.Run(ctx)
	srv := &http.Server{Handler: dash, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	scheme := "http"
	if tlsConfig != nil {
		srv.TLSConfig = tlsConfig
		l = tls.NewListener(l, tlsConfig)
		scheme = "https"
	}
	go func() { _ = srv.Serve(l) }()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	url := scheme + "://" + l.Addr().String() + "/"
	if loopback && cfg.Auth == nil {
		url = scheme + "://localhost:" + portOf(l.Addr().String()) + "/"
	}
	g.logger.Info("dashboard listening", "url", url, "login", cfg.Auth != nil)
	return nil
}

// loopbackAddr reports whether a listen address is on loopback only:
// localhost or a loopback IP. An empty host, 0.0.0.0, :: and other names
// are not.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
