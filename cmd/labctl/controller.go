package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cast"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/lab-fleet/lab/broker"
	"github.com/lab-fleet/lab/broker/access"
	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/bus"
	"github.com/lab-fleet/lab/proto"
)

// Viper keys of the controller section (config file, LAB_CONTROLLER_* env).
const (
	keyControllerEnabled = "controller.enabled"
	keyControllerDir     = "controller.data_dir"
	keyControllerTrusted = "controller.trusted_keys"
	keyControllerName    = "controller.name"
)

var controllerKeys = []string{keyControllerEnabled, keyControllerDir, keyControllerTrusted, keyControllerName,
	keyHTTP, keyHTTPCert, keyHTTPKey, keyHTTPIdentities}

// controllerKeyFile is the service's own key in its data directory.
const controllerKeyFile = "controller.key"

// serviceSettings are the controller service's settings.
type serviceSettings struct {
	dir     string
	name    string
	trusted proto.Keyring
}

// addServiceFlags adds the controller service's flags to cmd.
func addServiceFlags(g *globals, cmd *cobra.Command, dirHelp string) {
	f := cmd.Flags()
	f.String("controller-dir", "", dirHelp)
	f.StringArray("trust-key", nil, "operator public `KEY` (labctl key public) whose signed rollouts the controller accepts (repeatable; config controller.trusted_keys); none: any, the nodes' trusted_keys decide")
	f.String("controller-name", "controller", "the controller's `NAME` in what it publishes; a replacement host must use the same to recover its rollouts")
}

// bindServiceFlags binds the service's flags to their keys; it runs when
// the command runs: several commands share these keys, and viper keeps
// one flag per key.
func bindServiceFlags(g *globals, cmd *cobra.Command) {
	mustBind(g.v, keyControllerDir, cmd, "controller-dir")
	mustBind(g.v, keyControllerTrusted, cmd, "trust-key")
	mustBind(g.v, keyControllerName, cmd, "controller-name")
}

// readServiceSettings reads the controller keys strictly; defaultDir is
// used when no data directory is configured.
func readServiceSettings(v *viper.Viper, defaultDir string) (serviceSettings, error) {
	var errs []error
	st := serviceSettings{dir: v.GetString(keyControllerDir), name: v.GetString(keyControllerName)}
	if st.dir == "" {
		st.dir = defaultDir
	}
	if st.name == "" {
		st.name = "controller"
	}
	if err := proto.ValidID(st.name); err != nil {
		errs = append(errs, fmt.Errorf("%s%s: %w", source(v, keyControllerName), keyControllerName, err))
	}
	keys, err := cast.ToStringSliceE(v.Get(keyControllerTrusted))
	if err != nil {
		errs = append(errs, fmt.Errorf("%s%s: want a list of public keys: %w", source(v, keyControllerTrusted), keyControllerTrusted, err))
	}
	if st.trusted, err = proto.NewKeyring(keys...); err != nil {
		errs = append(errs, fmt.Errorf("%s%s: %w (give public keys as `labctl key public` prints them)", source(v, keyControllerTrusted), keyControllerTrusted, err))
	}
	return st, errors.Join(errs...)
}

// loadControllerKey reads the service's own key from dir, creating it on
// first start.
func loadControllerKey(dir string, g *globals) (proto.PrivateKey, error) {
	path := filepath.Join(dir, controllerKeyFile)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return proto.PrivateKey{}, fmt.Errorf("controller data directory: %w", err)
	}
	k, err := readPrivateKey(path)
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return proto.PrivateKey{}, fmt.Errorf("the controller's key: %w", err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	if k, err = proto.GenerateKey("controller-" + hex.EncodeToString(b[:])); err != nil {
		return proto.PrivateKey{}, err
	}
	if err := writeFileAtomic(path, []byte(k.String()+"\n"), 0o600); err != nil {
		return proto.PrivateKey{}, fmt.Errorf("the controller's key: %w", err)
	}
	g.logger.Info("created the controller's key: pin its public key in every labd's controller_keys (NixOS: services.labd.controllerKeys)",
		"file", path, "public", k.Public().String())
	return k, nil
}

// writeFileAtomic writes a file by renaming a complete temporary one.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// newService builds the controller service on a connection.
func newService(g *globals, st serviceSettings, b controller.Bus, resp controller.Responder, fleet *controller.Fleet, topics proto.Topics) (*controller.Service, error) {
	key, err := loadControllerKey(st.dir, g)
	if err != nil {
		return nil, err
	}
	store, err := controller.OpenStore(filepath.Join(st.dir, "rollouts.db"))
	if err != nil {
		return nil, err
	}
	if len(st.trusted) == 0 {
		g.logger.Warn("the controller trusts no operator key: it accepts rollouts signed by any key, or unsigned; each labd's trusted_keys still decide (pin them here with --trust-key)")
	}
	g.logger.Info("controller service", "name", st.name, "data_dir", st.dir, "key", key.Public().String(), "time_zone", controller.ZoneName())
	return controller.NewService(controller.ServiceConfig{Bus: b, Responder: resp, Fleet: fleet, Topics: topics, Name: st.name,
		Store: store, Key: key, Trusted: st.trusted, Logger: g.logger})
}

// inlineBus is the embedded broker's inline client as the controller's
// connection: it reads every message as it is published (no client queue
// to overflow) and publishes without TCP.
type inlineBus struct {
	s     *broker.Server
	fleet *controller.Fleet

	mu   sync.Mutex
	subs map[string]func()
}

func (b *inlineBus) Publish(_ context.Context, topic string, payload []byte, retain bool) error {
	return b.s.Publish(topic, payload, retain)
}

// Subscribe subscribes the fleet view; a filter subscribed again is
// replaced, which delivers its retained messages anew.
func (b *inlineBus) Subscribe(_ context.Context, filters ...string) error {
	for _, f := range filters {
		b.mu.Lock()
		old := b.subs[f]
		b.mu.Unlock()
		if old != nil {
			old()
		}
		unsub, err := b.s.Subscribe(f, func(topic string, payload []byte, _ bool) { b.fleet.Handle(topic, payload) })
		if err != nil {
			return err
		}
		b.mu.Lock()
		if b.subs == nil {
			b.subs = map[string]func(){}
		}
		b.subs[f] = unsub
		b.mu.Unlock()
	}
	return nil
}

func (b *inlineBus) Respond(_ context.Context, topic string, correlation, payload []byte) error {
	return b.s.PublishMessage(broker.Message{Topic: topic, Payload: payload, Correlation: correlation})
}

// startInlineService runs the controller service beside the embedded
// broker until ctx ends; the returned channel is closed when it stopped.
func startInlineService(ctx context.Context, g *globals, s *broker.Server, st serviceSettings, cfg broker.Config, reg *prometheus.Registry) (<-chan struct{}, error) {
	topics, err := proto.NewTopics(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	fleet := controller.NewFleet(topics, g.logger)
	b := &inlineBus{s: s, fleet: fleet}
	svc, err := newService(g, st, b, b, fleet, topics)
	if err != nil {
		return nil, err
	}
	if err := fleet.Subscribe(ctx, b); err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	if _, err := s.SubscribeMessages(topics.CtlRequests(), func(m broker.Message) {
		if m.Retain {
			return // a request is never retained: an old one would run again at every start
		}
		svc.HandleRequest(controller.RequestMessage{Topic: m.Topic, Payload: m.Payload, ResponseTopic: m.ResponseTopic,
			Correlation: m.Correlation, Username: m.Username})
	}); err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	hs := httpSettings{fleet: fleet, service: svc, reg: reg}
	if cfg.Identities != "" {
		hs.login = s.Login
	}
	if err := serveHTTP(ctx, g, hs); err != nil {
		return nil, err
	}
	env := sidecarEnv{fleet: fleet, bus: b, topics: topics, reg: reg,
		subscribe: func(_ context.Context, filter string, handle func(string, []byte)) error {
			_, err := s.Subscribe(filter, func(topic string, payload []byte, _ bool) { handle(topic, payload) })
			return err
		}}
	if err := startSidecars(ctx, g, env); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = svc.Run(ctx)
	}()
	return done, nil
}

// busResponder answers requests on an MQTT client.
type busResponder struct{ c *bus.Client }

func (r busResponder) Respond(ctx context.Context, topic string, correlation, payload []byte) error {
	return r.c.PublishMessage(ctx, bus.Message{Topic: topic, Payload: payload, Correlation: correlation})
}

func newControllerCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "controller --broker URL [--controller-dir DIR] [--trust-key KEY]...",
		Short: "Run the controller service as a client of an external MQTT v5 broker",
		Long: `controller runs the service that drives rollouts — waves, deadlines,
failure thresholds, halts, the way back — so that a rollout goes on when the
laptop that submitted it sleeps. labctl broker runs the same service beside the
embedded broker; this command is for an external broker (mosquitto, EMQX,
HiveMQ, VerneMQ), as an ordinary MQTT v5 client with a controller identity
(--username/--password-file or a client certificate).

It answers requests on <prefix>/ctl/req/<verb> (submit, list, show, cancel,
pause, resume, reboot, job, forget, info; docs/protocol.md) and keeps its rollouts and its own key in --controller-dir
(default ~/.local/state/lab/controller); started again, it resumes the
rollouts that were running. Its key signs gates and commands:
pin its public key (printed at start, and by labctl controller key) in every
labd's controller_keys. The operator's key alone signs what machines run.`,
		Example: `  labctl controller --broker tls://broker.example:8883 --tls-ca ca.pem \
      --username ctl --password-file ctl.password --trust-key "$(labctl key public operator.key)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runController(cmd, g) },
	}
	addServiceFlags(g, cmd, "`DIR` for the controller's rollouts and key (default ~/.local/state/lab/controller)")
	addHTTPFlags(cmd, true)
	addSidecarFlags(g, cmd)
	addClientFlags(g, cmd)
	cmd.AddCommand(newControllerKeyCmd(g))
	return cmd
}

func newControllerKeyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key [--controller-dir DIR]",
		Short: "Print the controller's public key (for labd's controller_keys), creating the key if needed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bindServiceFlags(g, cmd)
			st, err := readServiceSettings(g.v, defaultControllerDir())
			if err != nil {
				return usageError{err}
			}
			k, err := loadControllerKey(st.dir, g)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.out, k.Public().String())
			return nil
		},
	}
	addServiceFlags(g, cmd, "the controller's data `DIR` (labctl broker: <data-dir>/controller)")
	return cmd
}

// defaultControllerDir is $XDG_STATE_HOME/lab/controller.
func defaultControllerDir() string {
	return filepath.Join(filepath.Dir(controller.DefaultStorePath()), "controller")
}

func runController(cmd *cobra.Command, g *globals) error {
	bindServiceFlags(g, cmd)
	bindHTTPFlags(g, cmd)
	bindSidecarFlags(g, cmd)
	st, err := readServiceSettings(g.v, defaultControllerDir())
	if err != nil {
		return usageError{err}
	}
	if err := checkSidecars(g); err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Requests reach the service once it exists; it subscribes to them
	// only then.
	var svc atomic.Pointer[controller.Service]
	topics, err := proto.NewTopics(g.v.GetString(keyPrefix))
	if err != nil {
		return usageError{fmt.Errorf("prefix: %w", err)}
	}
	reqPrefix := strings.TrimSuffix(topics.CtlRequests(), "+")
	var extra routes // the sidecars' own subscriptions
	conn, err := dial(ctx, g, nil, func(m bus.Message) bool {
		if !strings.HasPrefix(m.Topic, reqPrefix) {
			return extra.deliver(m.Topic, m.Payload)
		}
		if s := svc.Load(); s != nil && !m.Retain {
			s.HandleRequest(controller.RequestMessage{Topic: m.Topic, Payload: m.Payload, ResponseTopic: m.ResponseTopic, Correlation: m.Correlation})
		}
		return true
	})
	if err != nil {
		return err
	}
	defer conn.close()
	s, err := newService(g, st, conn.bus, busResponder{conn.bus}, conn.fleet, conn.topics)
	if err != nil {
		return err
	}
	svc.Store(s)
	if err := conn.bus.Subscribe(ctx, s.Filters()...); err != nil {
		return explainRefusal(err, conn.self, "labctl controller", conn.topics, s.Filters())
	}
	hs := httpSettings{fleet: conn.fleet, service: s, reg: prometheus.NewRegistry()}
	if path := g.v.GetString(keyHTTPIdentities); path != "" {
		tab, err := access.Load(path, conn.topics)
		if err != nil {
			return usageError{fmt.Errorf("--http-identities: %w", err)}
		}
		hs.login = func(_, user string, password []byte) (access.Identity, error) {
			if id, ok := tab.Authenticate(user, password); ok {
				return id, nil
			}
			return access.Identity{}, access.ErrLogin
		}
	}
	if err := serveHTTP(ctx, g, hs); err != nil {
		return err
	}
	env := sidecarEnv{fleet: conn.fleet, bus: conn.bus, topics: conn.topics, reg: hs.reg,
		subscribe: func(ctx context.Context, filter string, handle func(string, []byte)) error {
			extra.add(filter, handle)
			return conn.bus.Subscribe(ctx, filter)
		}}
	if err := startSidecars(ctx, g, env); err != nil {
		return err
	}
	g.logger.Info("controller service running", "broker", strings.Join(conn.urls, ", "))
	return s.Run(ctx)
}
