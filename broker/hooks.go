package broker

import (
	"bytes"
	"errors"
	"fmt"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/lab-fleet/lab/broker/access"
	"github.com/lab-fleet/lab/broker/guard"
	"github.com/lab-fleet/lab/proto"
)

// addHooks installs every hook, in order: guard (a login gives its
// connection's pending slot back), pace (in front of the ACL hook), the
// ACL hook, the JSON mirror, limits, and the store (broker/doc.go).
func (s *Server) addHooks() error {
	var acl mqtt.Hook
	topics, _ := proto.NewTopics(s.cfg.Prefix) // validated by Config
	if s.cfg.Identities == "" {
		s.log.Warn("no identities file: every client may connect and publish anything (set broker.identities)")
		acl = new(auth.AllowHook)
	} else {
		h, err := access.NewHook(s.cfg.Identities, topics, s.log)
		if err != nil {
			return fmt.Errorf("broker.identities: %w", err)
		}
		h.SetLimiter(s.guard)
		s.access, acl = h, h
	}
	if err := s.mochi.AddHook(&guardHook{g: s.guard}, nil); err != nil {
		return fmt.Errorf("add guard hook: %w", err)
	}
	// The pace hook goes first: it asks the ACL hook, and waits for a full
	// subscriber queue before an allowed delivery (pace.go).
	if pace := newPaceHook(acl); pace != nil {
		if err := s.mochi.AddHook(pace, nil); err != nil {
			return fmt.Errorf("add pace hook: %w", err)
		}
	} else {
		s.log.Warn("this mochi-mqtt version hides its client queue: bursts above broker.client_queue will be dropped")
	}
	if err := s.mochi.AddHook(acl, nil); err != nil {
		return fmt.Errorf("add %s hook: %w", acl.ID(), err)
	}
	if !s.cfg.NoJSONMirror {
		mirror := &mirrorHook{topics: topics, publish: s.publishCopy, subscribed: s.subscribed, log: s.log}
		if err := s.mochi.AddHook(mirror, nil); err != nil {
			return fmt.Errorf("add json mirror hook: %w", err)
		}
	}
	limits := &limitsHook{maxPacket: s.cfg.MaxPacketSize}
	if err := s.mochi.AddHook(limits, nil); err != nil {
		return fmt.Errorf("add limits hook: %w", err)
	}
	if s.cfg.DataDir == "" {
		return nil
	}
	opts, err := storeOptions(s.cfg.DataDir)
	if err != nil {
		return err
	}
	if err := s.mochi.AddHook(newStoreHook(), opts); err != nil {
		if inUse := (*DataDirInUseError)(nil); errors.As(err, &inUse) {
			err = inUse // without mochi's "failed initialising lab-store hook"
		}
		return fmt.Errorf("open store %s: %w", opts.Path, err)
	}
	return nil
}

// guardHook tells the guard that a connection logged in: its pending slot
// is given back and its address is known good.
type guardHook struct {
	mqtt.HookBase
	g *guard.Guard
}

func (h *guardHook) ID() string { return "lab-guard" }

func (h *guardHook) Provides(b byte) bool { return b == mqtt.OnSessionEstablish }

func (h *guardHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if gc := guardConn(cl.Net.Conn); gc != nil {
		gc.Authenticated()
		h.g.LoginSucceeded(cl.Net.Remote, string(cl.Properties.Username))
	}
}

// limitsHook advertises the maximum packet size in CONNACK ([MQTT-3.2.2.3.6]):
// mochi enforces Capabilities.MaximumPacketSize on every inbound packet but
// does not tell v5 clients about it.
type limitsHook struct {
	mqtt.HookBase
	maxPacket uint32
}

func (h *limitsHook) ID() string { return "lab-limits" }

func (h *limitsHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnPacketEncode}, []byte{b})
}

func (h *limitsHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && cl.Properties.ProtocolVersion == 5 {
		pk.Properties.MaximumPacketSize = h.maxPacket
	}
	return pk
}

// ReloadIdentities reads the identities file again (SIGHUP). Without an
// identities file it does nothing.
func (s *Server) ReloadIdentities() error {
	if s.access == nil {
		return nil
	}
	return s.access.Reload()
}

// LiftBans lifts every login ban (SIGHUP, with ReloadIdentities: the
// operator fixed a password file or the identities) and returns how many
// were in force.
func (s *Server) LiftBans() int { return s.guard.LiftBans() }

// ErrNoIdentities: the broker runs without an identities file, so it
// has no logins to check.
var ErrNoIdentities = errors.New("the broker has no identities file (--identities): no logins to check")

// Login checks a username and password against the broker's identities,
// under its limits on failed logins (the dashboard's login).
func (s *Server) Login(remote, user string, password []byte) (access.Identity, error) {
	if s.access == nil {
		return access.Identity{}, ErrNoIdentities
	}
	return s.access.Login(remote, user, password)
}
