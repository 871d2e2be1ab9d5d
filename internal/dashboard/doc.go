// Package dashboard is the controller service's web window on the fleet:
// a page of every machine, one per rollout and one per machine, that
// update live while a rollout runs, and the buttons that cancel, pause
// and resume a rollout.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary
// (static/, go:embed): nothing is fetched from elsewhere and nothing is
// built. Its data comes from a small JSON API (/api/...) whose values are
// internal/render's views — the same rows, counts and rollout summaries
// that labctl status and labctl watch print — and from one server-sent
// event stream (/api/live): a snapshot when it connects, then the rows
// that changed, at most every UpdateInterval. One goroutine (hub.run)
// turns the fleet view's changes into those updates; each page's stream
// has a bounded queue, and a page too slow for it is disconnected (the
// browser reconnects and gets a snapshot).
//
// Who may do what is the Authenticator's answer (the broker's identities:
// viewers see, controllers may also act). Without one, every request is
// the controller: only for a listener on loopback, where the Host header
// must then name loopback too (no DNS rebinding). Every request that acts
// needs the header X-Lab-Action, which a page of another site cannot send
// without a CORS preflight this server never grants.
package dashboard
