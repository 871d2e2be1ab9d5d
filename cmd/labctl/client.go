package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/lab-fleet/lab/broker/access"
	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/internal/pki"
	"github.com/lab-fleet/lab/proto"
	"github.com/spf13/cast"
	"github.com/spf13/cobra"
)

// Client flags shared by the commands that talk to a broker (docs/labctl.md).
const (
	keyBroker       = "broker"     // a URL or a list, as in labd's config; env LAB_BROKER
	keyBrokerURL    = "broker.url" // the older spelling, inside the broker section; env LAB_BROKER_URL
	keyUsername     = "username"
	keyPasswordFile = "password_file"
	keyPrefix       = "prefix"
	keyTLSCA        = "tls.ca"
	keyTLSClientCrt = "tls.cert"
	keyTLSClientKey = "tls.key"
)

func addClientFlags(g *globals, cmd *cobra.Command) {
	f := cmd.Flags()
	f.String("broker", defaultBrokerURL, "broker `URL` (mqtt://, tls://, ws://; env LAB_BROKER; config key broker)")
	f.String("username", "", "MQTT username (env LAB_USERNAME)")
	f.String("password-file", "", "read the MQTT password from `FILE` (env LAB_PASSWORD_FILE)")
	f.String("prefix", proto.DefaultPrefix, "topic prefix")
	f.String("tls-ca", "", "with tls:// or wss://: the CA `FILE` that signed the broker's certificate (default: the system's)")
	f.String("tls-cert", "", "client certificate `FILE` (its common name is the identity; no password needed)")
	f.String("tls-key", "", "client private key `FILE`")
	// Bind when the command runs: several commands share these keys, and
	// viper keeps one flag per key.
	cmd.PreRun = func(cmd *cobra.Command, _ []string) {
		g.brokerFlag = cmd.Flags().Lookup("broker")
		mustBind(g.v, keyUsername, cmd, "username")
		mustBind(g.v, keyPasswordFile, cmd, "password-file")
		mustBind(g.v, keyPrefix, cmd, "prefix")
		mustBind(g.v, keyTLSCA, cmd, "tls-ca")
		mustBind(g.v, keyTLSClientCrt, cmd, "tls-cert")
		mustBind(g.v, keyTLSClientKey, cmd, "tls-key")
	}
}

// connection is a connected client feeding a fleet view.
type connection struct {
	bus    *bus.Client
	fleet  *controller.Fleet
	topics proto.Topics
	// self names this client in its response topics
	// (<p>/ctl/res/<self>/...): its identity, else its client id.
	self    string
	answers *answers
	urls    []string
}

// connect dials the broker, subscribes the fleet view and waits for the
// retained state to arrive.
func connect(ctx context.Context, g *globals) (*connection, error) { return connectTo(ctx, g, nil) }

// connectTo is connect with the subscriptions that filters chooses (nil:
// the whole fleet view). `labctl status` reads status and presence only:
// half the retained messages of a large fleet.
func connectTo(ctx context.Context, g *globals, filters func(proto.Topics) []string) (*connection, error) {
	return dial(ctx, g, filters, nil)
}

// dial is connectTo where intercept, when set, sees every message first
// and keeps the ones it reports taking (the controller's requests).
func dial(ctx context.Context, g *globals, filters func(proto.Topics) []string, intercept func(bus.Message) bool) (*connection, error) {
	topics, err := proto.NewTopics(g.v.GetString(keyPrefix))
	if err != nil {
		return nil, usageError{fmt.Errorf("prefix: %w", err)}
	}
	var password []byte
	if pf := g.v.GetString(keyPasswordFile); pf != "" {
		b, err := os.ReadFile(pf)
		if err != nil {
			return nil, usageError{fmt.Errorf("--password-file (config password_file, env LAB_PASSWORD_FILE): %w", err)}
		}
		password = []byte(strings.TrimSpace(string(b)))
		if len(password) == 0 {
			return nil, usageError{fmt.Errorf("--password-file %s is empty: it should hold the password labctl node add printed", pf)}
		}
	}
	fleet := controller.NewFleet(topics, g.logger)
	// With a username the broker binds client ids to it: <user>-<random>
	// lets several labctl commands of one operator run at once.
	clientID := "labctl-" + proto.NewID()[:12]
	if u := g.v.GetString(keyUsername); u != "" {
		clientID = u + "-" + proto.NewID()[:12]
	}
	var tlsCfg *tls.Config
	if ca, crt, key := g.v.GetString(keyTLSCA), g.v.GetString(keyTLSClientCrt), g.v.GetString(keyTLSClientKey); ca != "" || crt != "" || key != "" {
		if (crt == "") != (key == "") {
			return nil, usageError{errors.New("--tls-cert and --tls-key go together: the client certificate and its private key (labctl node add --pki wrote both)")}
		}
		if tlsCfg, err = pki.ClientConfig(ca, crt, key); err != nil {
			flag := "--tls-cert/--tls-key"
			if errors.Is(err, pki.ErrCA) {
				flag = "--tls-ca"
			}
			return nil, usageError{fmt.Errorf("%s: %w", flag, err)}
		}
		if cn := pki.CommonName(tlsCfg); cn != "" && g.v.GetString(keyUsername) == "" {
			clientID = cn + "-" + proto.NewID()[:12] // the certificate is the identity
		}
	}
	urls, err := g.brokerURLs()
	if err != nil {
		return nil, usageError{err}
	}
	self := identityOf(g.v.GetString(keyUsername), tlsCfg)
	if self == "" {
		self = clientID
	}
	ans := newAnswers(topics.CtlResponses(self))
	c, err := bus.Dial(ctx, bus.Config{
		URLs:       urls,
		TLS:        tlsCfg,
		ClientID:   clientID,
		Username:   g.v.GetString(keyUsername),
		Password:   password,
		CleanStart: true,
		OnMessage: func(m bus.Message) {
			if intercept != nil && intercept(m) {
				return
			}
			if !ans.deliver(m) {
				fleet.Handle(m.Topic, m.Payload)
			}
		},
		// A rollout being followed checks, after a reconnect, what the
		// broker still holds (controller: reassert).
		OnDown:   fleet.ConnectionLost,
		OnUp:     func(context.Context, *bus.Client) { fleet.Reconnected() },
		Logger:   g.logger,
		FailFast: true,
	})
	if err != nil {
		return nil, usageError{err}
	}
	wctx, cancel := context.WithTimeout(ctx, connectWait)
	defer cancel()
	if err := c.AwaitConnection(wctx); err != nil {
		_ = c.Close(context.Background())
		return nil, explainConnect(err, urls, self, g.v.GetString(keyUsername) != "" || tlsCfg != nil && len(tlsCfg.Certificates) > 0)
	}
	subs := fleet.Filters()
	if filters != nil {
		subs = filters(topics)
	}
	if len(subs) == 0 {
		return &connection{bus: c, fleet: fleet, topics: topics, self: self, answers: ans, urls: urls}, nil
	}
	if err := c.Subscribe(ctx, subs...); err != nil {
		_ = c.Close(context.Background())
		return nil, explainRefusal(err, identityOf(g.v.GetString(keyUsername), tlsCfg), g.command, topics, subs)
	}
	// Until the retained flood stops (10,000 statuses take seconds), so
	// that `--on @group` never selects from half a fleet.
	fleet.Settle(ctx, 300*time.Millisecond, 30*time.Second)
	return &connection{bus: c, fleet: fleet, topics: topics, self: self, answers: ans, urls: urls}, nil
}

func (c *connection) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.bus.Close(ctx)
}

// session is what a command acting on the fleet needs: the operator key
// (optional, warned about), a context that SIGINT and SIGTERM cancel, a
// connection feeding the fleet view, and a controller on it.
type session struct {
	ctx  context.Context
	key  *proto.PrivateKey
	conn *connection
	ctl  *controller.Controller
	stop context.CancelFunc
}

func openSession(cmd *cobra.Command, g *globals, keyFile string) (*session, error) {
	key, err := optionalKey(g, keyFile)
	if err != nil {
		return nil, err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	conn, err := connect(ctx, g)
	if err != nil {
		stop()
		return nil, err
	}
	return &session{ctx: ctx, key: key, conn: conn, ctl: controller.New(conn.bus, conn.fleet, conn.topics, "labctl"), stop: stop}, nil
}

func (s *session) close() {
	s.conn.close()
	s.stop()
}

// defaultBrokerURL is the broker dialled when nothing names one.
const defaultBrokerURL = "mqtt://127.0.0.1:1883"

// brokerURLs returns the brokers to dial (tried in turn, as labd does),
// from the first place that names them: --broker, LAB_BROKER,
// LAB_BROKER_URL, the config file's broker (a URL or a list, as in labd's
// config), its broker.url (the older spelling, which can sit next to the
// broker's own settings), else the default.
func (g *globals) brokerURLs() ([]string, error) {
	if f := g.brokerFlag; f != nil && f.Changed {
		return []string{f.Value.String()}, nil
	}
	for _, env := range []string{"LAB_BROKER", "LAB_BROKER_URL"} {
		if u := os.Getenv(env); u != "" {
			return []string{u}, nil
		}
	}
	file := g.v.ConfigFileUsed()
	if g.v.InConfig(keyBroker) {
		switch raw := g.v.Get(keyBroker).(type) {
		case map[string]any: // the broker section: broker.url, if any, names it
		case string:
			return []string{raw}, nil
		default:
			urls, err := cast.ToStringSliceE(raw)
			if err != nil || len(urls) == 0 {
				return nil, fmt.Errorf("%s: %s: want a broker URL or a list of them, not %v", file, keyBroker, raw)
			}
			return urls, nil
		}
	}
	if g.v.InConfig(keyBrokerURL) {
		u, err := cast.ToStringE(g.v.Get(keyBrokerURL))
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", file, keyBrokerURL, err)
		}
		return []string{u}, nil
	}
	if f := g.brokerFlag; f != nil {
		return []string{f.DefValue}, nil
	}
	return []string{defaultBrokerURL}, nil
}

// identityOf is the name the broker knows this client by: its username,
// else its certificate's common name ("" when it has neither).
func identityOf(username string, tlsCfg *tls.Config) string {
	if username != "" {
		return username
	}
	if tlsCfg != nil {
		return pki.CommonName(tlsCfg)
	}
	return ""
}

// refusedRE matches internal/bus's error for a subscription the broker
// refused with MQTT v5's reason code 0x87, "not authorized".
var refusedRE = regexp.MustCompile(`subscribe (\S+) refused: reason 0x87`)

// explainRefusal says why the broker refused one of subs and which role
// the command needs. labctl cannot ask the broker for its role, so it
// reasons from the rules (broker/access, docs/security.md's table): the
// bus reports the first refusal, so the filters before it were granted.
func explainRefusal(err error, identity, command string, topics proto.Topics, subs []string) error {
	m := refusedRE.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	refused := m[1]
	granted := subs
	if i := slices.Index(subs, refused); i >= 0 {
		granted = subs[:i]
	}
	rules, rerr := access.New(access.File{}, topics)
	if rerr != nil {
		return err
	}
	reads := func(role access.Role, filters ...string) bool {
		for _, f := range filters {
			if !rules.CanSubscribe(access.Identity{Name: "x", Role: role}, f) {
				return false
			}
		}
		return true
	}
	who := fmt.Sprintf("identity %q", identity)
	if identity == "" {
		who = "this connection (no username, no client certificate)"
	}
	var rights string
	switch {
	case reads(access.RoleViewer, refused):
		rights = "it has neither a viewer's nor a controller's rights"
	case len(granted) > 0 && reads(access.RoleViewer, granted...):
		rights = "it may read " + strings.Join(granted, ", ") + ": a viewer's rights"
	default:
		rights = "it lacks a controller's rights"
	}
	need := access.RoleController
	if reads(access.RoleViewer, subs...) {
		need = access.RoleViewer
	}
	return refusalError{err: err, msg: fmt.Sprintf("%s may not subscribe to %s (the broker refused it: 0x87, not authorized); %s. "+
		"%s needs a %s identity: labctl node add NAME --role %s --identities FILE on the broker, then --username NAME --password-file NAME.password (docs/security.md)",
		who, refused, rights, command, need, need)}
}

// refusalError is the bus's error explained: it prints the explanation
// and unwraps to the bus's error.
type refusalError struct {
	msg string
	err error
}

func (e refusalError) Error() string { return e.msg }
func (e refusalError) Unwrap() error { return e.err }
