package proto

import (
	"crypto/ed25519"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/fixtures from the fixture table")

// fixtureKey is a fixed signing key, so that signed fixtures are byte-stable
// (ed25519 signatures are deterministic).
var fixtureKey = PrivateKey{ID: "op-2026", Key: ed25519.NewKeyFromSeed([]byte("lab fixture seed 0123456789abcde"))}

const (
	tl1 = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-n1-25.05"
	tl2 = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-n1-25.11"
)

func env(id string) Envelope { return Envelope{ID: id, TS: 1764000000000, From: "labctl"} }

// fixtures is the table of one canonical message per kind. Its encodings are
// stored in testdata/fixtures/<name>.hex; codec, signature and fuzz tests use
// them. Change a message type → run `go test ./proto -run Fixtures -update`
// and review the diff: every changed byte is a wire change.
func fixtures() []struct {
	name string
	msg  Message
} {
	d := &Desired{Envelope: env("d1"), Node: "n1", Rollout: "r-1", Gen: 1764000000000, Toplevel: tl2,
		Action: ActionSwitch, Reboot: RebootIfNeeded, Wave: 1, Checks: []string{"web", "ssh"},
		Timeouts: Timeouts{Fetch: 1800, Activate: 600, Confirm: 300}, Expires: 1764086400000}
	must(Sign(d, fixtureKey))
	g := &Gate{Envelope: env("g1"), Group: "canary", Rollout: "r-1", OpenWave: 1, State: GateRunning, Seq: 3}
	must(Sign(g, fixtureKey))
	c := &Command{Envelope: env("c1"), Op: OpReboot, Rollout: "r-1", Targets: []string{"n1", "n2"},
		Params: map[string]string{"delay": "30s", "reason": "kernel"}, Expires: 1764000060000}
	must(Sign(c, fixtureKey))
	s := &NodeStatus{Envelope: env("s1"), Node: "n1", Groups: []string{"canary", "servers"},
		Execution:  Execution{Rollout: "r-1", Gen: 1764000000000, Toplevel: tl2, Action: ActionSwitch, State: StateSucceeded, Attempt: 1, Since: 1764000001000},
		AppliedGen: 1764000000000, Current: tl2, Booted: tl1, Previous: tl1,
		Checks:      CheckResults{"web": {OK: true, At: 1764000002000}, "ssh": {OK: false, Detail: "connection refused", At: 1764000002000}},
		NeedsReboot: true, NixOSVersion: "25.11.20261120.abcdef", LabdVersion: "0.1.0", BootID: "5c1c2b3e-0000-4000-8000-000000000001",
		Machine:  Machine{Role: "web", RebootOrder: 2, Dependencies: []string{"db1"}, RebootDelay: 30, Criticality: "high"},
		Problems: []string{"cannot save state: read-only file system"}, UpdatedAt: 1764000002000}
	// A labd older than NodeStatus.Pins: the same status without them,
	// byte for byte the status fixture from before the field.
	old := *s
	s.Pins = &KeyPins{Operator: []string{"op-2026"}, Controller: []string{"ctl-1", "ctl-2"}}
	p := &Presence{Envelope: env("p1"), Node: "n1", Online: true, Since: 1764000000000}
	e := &Event{Envelope: env("e1"), Node: "n1", Rollout: "r-1", Gen: 1764000000000, Prev: StateVerifying, State: StateRollingBack, Detail: `check "web": GET http://127.0.0.1/ → 500`}
	ack := &Event{Envelope: env("e2"), Node: "n1", Prev: StateRebooting, State: StateSucceeded,
		Detail: "reboot command failed: exit status 1: System has not been booted with systemd as init system (PID 1). Can't operate.",
		Cmd:    "c1", Op: OpReboot, Outcome: CmdFailed}
	r := &RolloutState{Envelope: env("r1"), Rollout: "r-1", CreatedAt: 1764000000000, Strategy: "all", Action: ActionSwitch,
		State: RolloutFailed, OpenWave: 0, Waves: [][]string{{"n1", "n2"}},
		Nodes: NodeProgressMap{
			"n1": {Gen: 1764000000000, Toplevel: tl2, State: StateSucceeded, Online: true},
			"n2": {Gen: 1764000000001, Toplevel: tl2, State: StateRolledBack, Error: "check web failed", Online: true},
		},
		Counters: Counters{Total: 2, Succeeded: 1, RolledBack: 1}, Reason: "1 node rolled back"}
	withSecrets := *s
	withSecrets.Envelope = env("s2")
	withSecrets.Recipient = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPv0pL0Hn3ZbGx2rM0Jx7yq1j9s1qkX3oZpM2xg1l8cF"
	withSecrets.Secrets = []SecretState{
		{Name: "db-password", Version: 1764000000000, State: SecretPresent, Path: "/run/lab-secrets/db-password", At: 1764000001000},
		{Name: "wifi", Version: 0, State: SecretError, Error: "not encrypted to this machine's key", At: 1764000001000},
	}
	withHostKeys := *s
	withHostKeys.Envelope = env("s3")
	withHostKeys.HostKeys = []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPv0pL0Hn3ZbGx2rM0Jx7yq1j9s1qkX3oZpM2xg1l8cF",
		"ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBFixture="}
	sec := &Secret{Envelope: env("x1"), Node: "n1", Name: "db-password", Version: 1764000000000,
		Ciphertext: []byte("age-encryption.org/v1\n-> X25519 fixture\n--- fixture\n\x00\x01"),
		Path:       "/run/lab-secrets/db-password", Owner: "postgres", Group: "postgres", Mode: 0o400,
		Restart: []string{"postgresql.service"}, Expires: 1764086400000}
	must(Sign(sec, fixtureKey))
	return []struct {
		name string
		msg  Message
	}{{"desired", d}, {"gate", g}, {"command", c}, {"status", s}, {"status-old", &old}, {"status-secrets", &withSecrets},
		{"status-hostkeys", &withHostKeys},
		{"presence", p}, {"event", e}, {"event-ack", ack}, {"rollout", r}, {"secret", sec}}
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func fixturePath(name string) string { return filepath.Join("testdata", "fixtures", name+".hex") }

// readFixture returns the stored canonical bytes of a fixture.
func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	h, err := os.ReadFile(fixturePath(name))
	if err != nil {
		t.Fatalf("read fixture (run with -update to create): %v", err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(h)))
	if err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	return b
}

// newOf returns a zero message of the same type as m.
func newOf(m Message) Message {
	switch m.(type) {
	case *Desired:
		return new(Desired)
	case *Gate:
		return new(Gate)
	case *Command:
		return new(Command)
	case *NodeStatus:
		return new(NodeStatus)
	case *Presence:
		return new(Presence)
	case *Event:
		return new(Event)
	case *RolloutState:
		return new(RolloutState)
	case *Secret:
		return new(Secret)
	}
	panic("unknown message type")
}
