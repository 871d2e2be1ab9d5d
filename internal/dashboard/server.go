package dashboard

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/lab-fleet/lab/controller"
	"github.com/lab-fleet/lab/internal/render"
	"github.com/lab-fleet/lab/proto"
)

//go:embed static
var static embed.FS

// Roles a login may have.
const (
	RoleViewer     = "viewer"     // sees everything
	RoleController = "controller" // may also cancel, pause and resume rollouts
)

// ErrLogin is a refused login (wrong user or password, or not a person's
// identity).
var ErrLogin = errors.New("login refused")

// Authenticator checks a login against the broker's identities.
type Authenticator interface {
	// Login returns the role of user (RoleViewer or RoleController) if
	// password is theirs; remote is the client's address, for the
	// broker's limits on failed logins.
	Login(remote, user string, password []byte) (role string, err error)
}

// Service is what the dashboard asks of the controller service
// (*controller.Service).
type Service interface {
	Ask(ctx context.Context, verb string, req *controller.Request, who string) *controller.Response
}

// Config configures a Server.
type Config struct {
	Fleet   *controller.Fleet
	Service Service       // nil: no buttons, and no rollout records
	Auth    Authenticator // nil: no login, everyone is the controller (loopback only)
	// Metrics is served on /metrics (nil: 404).
	Metrics http.Handler
	Logger  *slog.Logger
	// UpdateInterval is the shortest time between two live updates (0:
	// UpdateInterval).
	UpdateInterval time.Duration
}

// Server serves the dashboard; Run drives its live updates.
type Server struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
	hub *hub

	mu     sync.Mutex
	logins map[[sha256.Size]byte]cachedLogin // by digest of user and password
}

type cachedLogin struct {
	user, role string
	until      time.Time
}

// loginCache is how long a checked login is trusted without asking the
// Authenticator again (a bcrypt check per request would be slow).
const loginCache = 5 * time.Minute

// New returns a dashboard server; call Run to start its live updates.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), logins: map[[sha256.Size]byte]cachedLogin{}}
	if cfg.UpdateInterval <= 0 {
		cfg.UpdateInterval = UpdateInterval
	}
	s.hub = newHub(cfg.Fleet, s.log, cfg.UpdateInterval)
	files, _ := fs.Sub(static, "static")
	s.mux.Handle("GET /", http.FileServerFS(files))
	s.mux.HandleFunc("GET /api/fleet", s.fleet)
	s.mux.HandleFunc("GET /api/live", s.hub.serve)
	s.mux.HandleFunc("GET /api/rollouts/{id}", s.rollout)
	s.mux.HandleFunc("GET /api/machines/{name}", s.machine)
	s.mux.HandleFunc("POST /api/rollouts/{id}/{verb}", s.act)
	s.mux.HandleFunc("GET /api/whoami", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"user": user(r), "role": role(r), "actions": role(r) == RoleController && cfg.Service != nil})
	})
	if cfg.Metrics != nil {
		s.mux.Handle("GET /metrics", cfg.Metrics)
	}
	return s
}

// Run pushes live updates until ctx ends.
func (s *Server) Run(ctx context.Context) { s.hub.run(ctx) }

type ctxKey int

const (
	keyUser ctxKey = iota
	keyRole
)

func user(r *http.Request) string { s, _ := r.Context().Value(keyUser).(string); return s }
func role(r *http.Request) string { s, _ := r.Context().Value(keyRole).(string); return s }

// ServeHTTP checks who asks, then serves.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
	who, rl := "local", RoleController
	if s.cfg.Auth == nil {
		if !loopbackHost(r.Host) {
			http.Error(w, "this dashboard answers only to localhost names (it has no login): open http://localhost:PORT/", http.StatusMisdirectedRequest)
			return
		}
	} else {
		u, p, ok := r.BasicAuth()
		if !ok {
			h.Set("WWW-Authenticate", `Basic realm="lab", charset="UTF-8"`)
			http.Error(w, "log in with a viewer or controller identity of the broker", http.StatusUnauthorized)
			return
		}
		var err error
		if rl, err = s.login(r.RemoteAddr, u, p); err != nil {
			h.Set("WWW-Authenticate", `Basic realm="lab", charset="UTF-8"`)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		who = u
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		// A page of another site can POST a form here, but cannot set a
		// header without a CORS preflight, which is never granted.
		if r.Header.Get("X-Lab-Action") == "" {
			http.Error(w, "an action needs the header X-Lab-Action (the dashboard's buttons send it)", http.StatusForbidden)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) {
			http.Error(w, "cross-origin request refused", http.StatusForbidden)
			return
		}
	}
	ctx := context.WithValue(context.WithValue(r.Context(), keyUser, who), keyRole, rl)
	s.mux.ServeHTTP(w, r.WithContext(ctx))
}

// login checks user and password, trusting a recent success.
func (s *Server) login(remote, u, p string) (string, error) {
	key := sha256.Sum256([]byte(u + "\x00" + p))
	now := time.Now()
	s.mu.Lock()
	c, ok := s.logins[key]
	s.mu.Unlock()
	if ok && now.Before(c.until) {
		return c.role, nil
	}
	rl, err := s.cfg.Auth.Login(remote, u, []byte(p))
	if err != nil {
		s.log.Info("dashboard login refused", "user", u, "remote", remote, "err", err)
		return "", err
	}
	if rl != RoleViewer && rl != RoleController {
		return "", fmt.Errorf("%w: %s is not a viewer or controller identity", ErrLogin, u)
	}
	s.mu.Lock()
	if len(s.logins) > 1000 {
		clear(s.logins)
	}
	s.logins[key] = cachedLogin{user: u, role: rl, until: now.Add(loginCache)}
	s.mu.Unlock()
	return rl, nil
}

// loopbackHost reports whether a Host header names this machine's
// loopback: localhost, 127.0.0.0/8 or ::1, with any port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

func sameOrigin(origin, host string) bool {
	_, rest, ok := strings.Cut(origin, "://")
	return ok && strings.EqualFold(rest, host)
}

// FleetData is /api/fleet and the live stream's snapshot.
type FleetData struct {
	Counts   render.FleetCounts   `json:"counts"`
	Machines []render.StatusRow   `json:"machines"` // most urgent first
	Rollouts []render.RolloutView `json:"rollouts"` // running first, then newest
	Now      time.Time            `json:"now"`
}

func fleetData(f *controller.Fleet) FleetData {
	rows := render.StatusRows(f.Snapshot())
	render.ByAttention(rows)
	views := render.Rollouts(f.Rollouts())
	for i := range views {
		views[i].Targets = nil // the rollout's own page lists them
	}
	return FleetData{Counts: render.Counts(rows), Machines: rows, Rollouts: views, Now: time.Now().UTC()}
}

func (s *Server) fleet(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, fleetData(s.cfg.Fleet))
}

// historyLimit is how many lines a rollout's or machine's page shows.
const historyLimit = 200

// RolloutData is /api/rollouts/{id}.
type RolloutData struct {
	Rollout render.RolloutView `json:"rollout"`
	Paused  string             `json:"paused,omitempty"` // who paused it
	Lines   []render.Line      `json:"lines"`
	Actions []string           `json:"actions"` // what this login may do to it now
}

func (s *Server) rollout(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := proto.ValidID(id); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("rollout id %q: %w", id, err))
		return
	}
	rs, ok := s.cfg.Fleet.Rollout(id)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no rollout %s: the broker holds no state of it", id))
		return
	}
	d := RolloutData{Rollout: render.Rollout(rs), Actions: []string{}}
	d.Lines = render.Lines(s.cfg.Fleet.History(func(h controller.Happening) bool { return h.RolloutID() == id }, historyLimit))
	if s.cfg.Service != nil {
		if resp := s.cfg.Service.Ask(r.Context(), controller.VerbShow, &controller.Request{Rollout: id}, user(r)); resp.Code == controller.CodeOK && resp.Record != nil {
			d.Paused = resp.Record.Paused
			d.Rollout.Submitter = resp.Record.Submitter
		}
		if role(r) == RoleController {
			d.Actions = actions(d.Rollout, d.Paused)
		}
	}
	writeJSON(w, http.StatusOK, d)
}

// actions are the buttons a rollout has in its state.
func actions(v render.RolloutView, paused string) []string {
	switch {
	case v.Active && paused != "":
		return []string{controller.VerbResume, controller.VerbCancel}
	case v.Active:
		return []string{controller.VerbPause, controller.VerbCancel}
	case v.State == proto.RolloutPending, v.State == proto.RolloutHalted:
		return []string{controller.VerbResume, controller.VerbCancel}
	}
	return []string{}
}

// MachineData is /api/machines/{name}.
type MachineData struct {
	Machine     render.StatusRow   `json:"machine"`
	Status      *proto.NodeStatus  `json:"status,omitempty"`
	Generations []proto.Generation `json:"generations"`
	Lines       []render.Line      `json:"lines"`
}

func (s *Server) machine(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := proto.ValidID(name); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("machine name %q: %w", name, err))
		return
	}
	v, ok := s.cfg.Fleet.Get(name)
	if !ok || (v.Status == nil && !v.Seen) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no machine %s has reported", name))
		return
	}
	d := MachineData{Machine: render.StatusRows([]controller.NodeView{v})[0], Status: v.Status, Generations: []proto.Generation{}}
	if v.Status != nil && v.Status.Generations != nil {
		d.Generations = v.Status.Generations
	}
	d.Lines = render.Lines(s.cfg.Fleet.History(func(h controller.Happening) bool { return h.Event != nil && h.Event.Node == name }, historyLimit))
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) act(w http.ResponseWriter, r *http.Request) {
	id, verb := r.PathValue("id"), r.PathValue("verb")
	if role(r) != RoleController {
		writeError(w, http.StatusForbidden, fmt.Errorf("%s may only look: %s needs a controller identity", user(r), verb))
		return
	}
	if s.cfg.Service == nil {
		writeError(w, http.StatusNotFound, errors.New("this dashboard runs without the controller service"))
		return
	}
	switch verb {
	case controller.VerbCancel, controller.VerbPause, controller.VerbResume:
	default:
		writeError(w, http.StatusNotFound, fmt.Errorf("unknown action %q: cancel, pause or resume", verb))
		return
	}
	if err := proto.ValidID(id); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("rollout id %q: %w", id, err))
		return
	}
	resp := s.cfg.Service.Ask(r.Context(), verb, &controller.Request{Rollout: id}, user(r))
	s.log.Info("dashboard action", "verb", verb, "rollout", id, "by", user(r), "code", resp.Code, "err", resp.Error)
	switch resp.Code {
	case controller.CodeOK:
		writeJSON(w, http.StatusOK, map[string]string{"rollout": id, "done": verb})
	case controller.CodeNotFound:
		writeError(w, http.StatusNotFound, errors.New(resp.Error))
	case controller.CodeRefused, controller.CodeBadRequest:
		writeError(w, http.StatusConflict, errors.New(resp.Error))
	default:
		writeError(w, http.StatusInternalServerError, errors.New(resp.Error))
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
