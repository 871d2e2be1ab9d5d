package node

import (
	"errors"
	"io/fs"
	"reflect"
	"strings"
	"testing"

	"github.com/lab-fleet/lab/node/hook"
	"github.com/lab-fleet/lab/proto"
)

func TestParseDeclared(t *testing.T) {
	for _, c := range []struct {
		name, json string
		want       []need
		err        string
	}{
		{name: "absent: none", json: "\x00"},
		{name: "empty object", json: `{}`},
		{name: "two, sorted, with and without a path",
			json: `{"tls":{},"db-password":{"path":"/run/lab-secrets/db","owner":"postgres","group":"","mode":"0400","restart_units":["postgresql.service"]}}`,
			want: []need{{Name: "db-password", Path: "/run/lab-secrets/db", Owner: "postgres", Mode: 0o400}, {Name: "tls"}}},
		{name: "mode not octal", json: `{"db":{"mode":"rw"}}`, err: `mode "rw" is not an octal mode`},
		{name: "mode too wide", json: `{"db":{"mode":"4755"}}`, err: "not an octal mode"},
		{name: "not json", json: `{"db":`, err: "etc/lab/secrets.json"},
		{name: "not an object", json: `["db"]`, err: "cannot unmarshal"},
		{name: "bad name", json: `{"../etc":{}}`, err: `secret name "../etc"`},
		{name: "relative path", json: `{"db":{"path":"db"}}`, err: "secret db: path"},
		{name: "mode a number", json: `{"db":{"mode":256}}`, err: "cannot unmarshal"},
	} {
		var b []byte
		if c.json != "\x00" {
			b = []byte(c.json)
		}
		got, err := parseDeclared(b)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.err)
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case !reflect.DeepEqual(got, c.want):
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
	absent := func(string, string) ([]byte, error) { return nil, &fs.PathError{Op: "open", Err: fs.ErrNotExist} }
	if n, err := readDeclared(absent, tlNew); n != nil || err != nil {
		t.Errorf("absent file: %v, %v; want none, no error", n, err)
	}
	broken := func(string, string) ([]byte, error) { return nil, errors.New("input/output error") }
	if _, err := readDeclared(broken, tlNew); err == nil || !strings.Contains(err.Error(), "input/output error") {
		t.Errorf("unreadable file: %v", err)
	}
	empty := func(string, string) ([]byte, error) { return []byte{}, nil }
	if _, err := readDeclared(empty, tlNew); err == nil {
		t.Error("an empty file is malformed, not absent")
	}
}

func TestPresentSecrets(t *testing.T) {
	recs := map[string]secretRecord{
		"db":      {Path: "/run/lab-secrets/db", State: proto.SecretPresent, Owner: "app", Mode: 0o440},
		"gone":    {Path: "/run/lab-secrets/gone", State: proto.SecretPresent}, // its file vanished (a reboot)
		"removed": {Path: "/run/lab-secrets/removed", State: proto.SecretPresent, Removed: true},
		"broken":  {State: proto.SecretError, Error: "not for this machine"},
	}
	got := presentSecrets(recs, func(p string) bool { return p != "/run/lab-secrets/gone" })
	if want := map[string]held{"db": {Path: "/run/lab-secrets/db", Owner: "app", Mode: 0o440}}; !reflect.DeepEqual(got, want) {
		t.Errorf("present %v, want %v", got, want)
	}
}

// A Desired whose system declares secrets waits for each, still fetching,
// then activates; the fetch deadline bounds the wait.
func TestSecretWaitTransitions(t *testing.T) {
	d := desired(10, 0, proto.ActionSwitch)
	db := need{Name: "db-password"}
	tls := need{Name: "tls", Path: "/run/lab-secrets/tls.pem"}
	waiting := func(name, why string, present map[string]held) state {
		s := at(proto.StateFetching, d)
		s.Needs, s.WaitSecret, s.Exec.Error, s.Present = []need{db, tls}, name, why, present
		return s
	}
	cases := []struct {
		name    string
		hooks   bool
		s       state
		ev      any
		want    proto.ExecState
		wait    string // s.WaitSecret afterwards
		effects []string
		detail  string // in the last event, or the execution's error
	}{
		{name: "fetched, declares none: activate", s: at(proto.StateFetching, d), ev: evFetched{gen: 10, current: tlOld},
			want: proto.StateActivating, effects: []string{"Activate", "Timer"}},
		{name: "fetched, secrets present: activate",
			s: func() state {
				s := at(proto.StateFetching, d)
				s.Present = map[string]held{"db-password": {Path: "/x/db"}, "tls": {Path: tls.Path}}
				return s
			}(),
			ev: evFetched{gen: 10, current: tlOld, needs: []need{db, tls}}, want: proto.StateActivating, effects: []string{"Activate", "Timer"}},
		{name: "fetched, secrets present, pre_activate hooks: they run", hooks: true,
			s: func() state {
				s := at(proto.StateFetching, d)
				s.Present = map[string]held{"db-password": {Path: "/x/db"}, "tls": {Path: tls.Path}}
				return s
			}(),
			ev: evFetched{gen: 10, current: tlOld, needs: []need{db, tls}}, want: proto.StateActivating, effects: []string{"Hooks", "Timer"}},
		{name: "fetched, one missing: wait for it, still fetching, no new timer",
			s: func() state {
				s := at(proto.StateFetching, d)
				s.Present = map[string]held{"tls": {Path: tls.Path}}
				return s
			}(),
			ev: evFetched{gen: 10, current: tlOld, needs: []need{db, tls}}, want: proto.StateFetching, wait: "db-password",
			detail: "waiting for secret db-password"},
		{name: "fetched, present elsewhere than declared: wait, saying where",
			s: func() state {
				s := at(proto.StateFetching, d)
				s.Present = map[string]held{"db-password": {Path: "/x/db"}, "tls": {Path: "/run/lab-secrets/tls"}}
				return s
			}(),
			ev: evFetched{gen: 10, current: tlOld, needs: []need{db, tls}}, want: proto.StateFetching, wait: "tls",
			detail: "waiting for secret tls with path /run/lab-secrets/tls.pem, as the new system declares (it has path /run/lab-secrets/tls: set it again with --path /run/lab-secrets/tls.pem)"},
		{name: "fetched, present with another owner: wait, saying which",
			s: func() state {
				s := at(proto.StateFetching, d)
				s.Present = map[string]held{"db-password": {Path: "/x/db", Owner: "root"}}
				return s
			}(),
			ev: evFetched{gen: 10, current: tlOld, needs: []need{{Name: "db-password", Owner: "postgres", Group: "postgres", Mode: 0o440}}}, want: proto.StateFetching, wait: "db-password",
			detail: "with owner postgres, as the new system declares (it has owner root: set it again with --owner postgres)"},
		{name: "fetched, present without a group the system declares",
			s: func() state {
				s := at(proto.StateFetching, d)
				s.Present = map[string]held{"db-password": {Path: "/x/db", Owner: "postgres"}}
				return s
			}(),
			ev: evFetched{gen: 10, current: tlOld, needs: []need{{Name: "db-password", Owner: "postgres", Group: "postgres"}}}, want: proto.StateFetching, wait: "db-password",
			detail: "with group postgres, as the new system declares (it has group none (labd's own)"},
		{name: "fetched, present with another mode",
			s: func() state {
				s := at(proto.StateFetching, d)
				s.Present = map[string]held{"db-password": {Path: "/x/db", Mode: 0o400}}
				return s
			}(),
			ev: evFetched{gen: 10, current: tlOld, needs: []need{{Name: "db-password", Mode: 0o440}}}, want: proto.StateFetching, wait: "db-password",
			detail: "with mode 0440, as the new system declares (it has mode 0400: set it again with --mode 0440)"},
		{name: "fetched, all as declared: activate",
			s: func() state {
				s := at(proto.StateFetching, d)
				s.Present = map[string]held{"db-password": {Path: "/x/db", Owner: "postgres", Group: "pg", Mode: 0o440}}
				return s
			}(),
			ev: evFetched{gen: 10, current: tlOld, needs: []need{{Name: "db-password", Path: "/x/db", Owner: "postgres", Group: "pg", Mode: 0o440}}}, want: proto.StateActivating,
			effects: []string{"Activate", "Timer"}},
		{name: "fetched, declaration malformed: failed, nothing changed", s: at(proto.StateFetching, d),
			ev: evFetched{gen: 10, current: tlOld, declErr: errors.New("etc/lab/secrets.json: unexpected end of JSON input")}, want: proto.StateFailed,
			detail: "secret declaration is malformed, so nothing was changed: etc/lab/secrets.json"},
		{name: "the awaited one arrives, another is missing: wait for that one",
			s:    waiting("db-password", "waiting for secret db-password", map[string]held{}),
			ev:   evSecrets{present: map[string]held{"db-password": {Path: "/x/db"}}},
			want: proto.StateFetching, wait: "tls", detail: "waiting for secret tls"},
		{name: "the last one arrives: activate", s: waiting("tls", "waiting for secret tls", map[string]held{"db-password": {Path: "/x/db"}}),
			ev:   evSecrets{present: map[string]held{"db-password": {Path: "/x/db"}, "tls": {Path: tls.Path}}},
			want: proto.StateActivating, effects: []string{"Activate", "Timer"}},
		{name: "another secret changes, still missing: nothing said again", s: waiting("db-password", "waiting for secret db-password", map[string]held{}),
			ev: evSecrets{present: map[string]held{"other": {Path: "/x/other"}}}, want: proto.StateFetching, wait: "db-password"},
		{name: "secrets change while nobody waits: recorded only", s: at(proto.StateVerifying, d),
			ev: evSecrets{present: map[string]held{"db-password": {Path: "/x/db"}}}, want: proto.StateVerifying},
		{name: "fetch deadline while waiting: timed out, naming the secret", s: waiting("db-password", "waiting for secret db-password", nil),
			ev: evTimeout{gen: 10, phase: proto.StateFetching}, want: proto.StateTimedOut,
			detail: "secret db-password never arrived within the fetch timeout, so nothing was changed"},
		{name: "fetch deadline while waiting at the wrong path: says where", s: waiting("tls", "waiting for secret tls at /run/lab-secrets/tls.pem, where…", nil),
			ev: evTimeout{gen: 10, phase: proto.StateFetching}, want: proto.StateTimedOut,
			detail: "secret tls never arrived within the fetch timeout, so nothing was changed (waiting for secret tls at /run/lab-secrets/tls.pem"},
		{name: "labd restarted while waiting: it fetches again and reads the declaration anew", s: waiting("db-password", "waiting for secret db-password", nil),
			ev: evResume{}, want: proto.StateFetching, wait: "db-password", effects: []string{"Fetch", "Timer"}},
		{name: "a stale fetch of another gen while waiting: ignored", s: waiting("db-password", "waiting for secret db-password", nil),
			ev: evFetched{gen: 9, current: tlOld}, want: proto.StateFetching, wait: "db-password"},
		{name: "cancelled while waiting", s: waiting("db-password", "waiting for secret db-password", nil),
			ev: evCancel{rollout: "r-1"}, want: proto.StateCancelled},
		{name: "a newer desired while waiting: it starts afresh", s: waiting("db-password", "waiting for secret db-password", nil),
			ev: evDesired{d: desired(11, 0, proto.ActionSwitch), current: tlOld}, want: proto.StateFetching, effects: []string{"Fetch", "Timer"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := testMachine()
			if tc.hooks {
				m = hookedMachine()
			}
			s, effs := m.next(tc.s, tc.ev)
			if s.Exec.State != tc.want || s.WaitSecret != tc.wait {
				t.Fatalf("state %s waiting for %q, want %s waiting for %q (error %q)", s.Exec.State, s.WaitSecret, tc.want, tc.wait, s.Exec.Error)
			}
			if got := kinds(effs); !reflect.DeepEqual(got, tc.effects) {
				t.Errorf("effects %v, want %v", got, tc.effects)
			}
			if s.Exec.State != tc.s.Exec.State || s.WaitSecret != tc.s.WaitSecret {
				if len(effs) == 0 {
					t.Fatal("a change without effects")
				}
				if _, ok := effs[0].(effPersist); !ok {
					t.Errorf("first effect %T, want persist", effs[0])
				}
			}
			if tc.detail != "" {
				var ev effEvent
				for _, e := range effs {
					if e, ok := e.(effEvent); ok {
						ev = e
					}
				}
				if !strings.Contains(ev.detail, tc.detail) || !strings.Contains(s.Exec.Error, tc.detail) {
					t.Errorf("event %q, error %q: want both to say %q", ev.detail, s.Exec.Error, tc.detail)
				}
			}
			if tc.want == proto.StateActivating && s.Exec.Error != "" {
				t.Errorf("activating with error %q left from the wait", s.Exec.Error)
			}
			if tc.want == proto.StateActivating && tc.hooks && s.Hooks != hook.PreActivate {
				t.Errorf("hooks %q, want pre_activate", s.Hooks)
			}
			if _, ok := tc.ev.(evSecrets); ok && !reflect.DeepEqual(s.Present, tc.ev.(evSecrets).present) {
				t.Errorf("present %v not recorded", s.Present)
			}
		})
	}
}

// What an execution waits for survives a restart; which secrets are
// present does not (the keeper says so again at start).
func TestSecretWaitPersisted(t *testing.T) {
	s := at(proto.StateFetching, desired(10, 0, proto.ActionSwitch))
	s.Needs, s.WaitSecret, s.Present = []need{{Name: "db-password", Path: "/run/lab-secrets/db"}}, "db-password", map[string]held{"x": {Path: "/run/lab-secrets/x"}}
	dir := t.TempDir()
	if err := saveState(dir, s); err != nil {
		t.Fatal(err)
	}
	got, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Needs, s.Needs) || got.WaitSecret != "db-password" || got.Present != nil {
		t.Errorf("loaded needs %+v wait %q present %v", got.Needs, got.WaitSecret, got.Present)
	}
}
