// Package alert tells people when the fleet needs them: it watches the
// controller's fleet view and posts events to webhooks.
//
// The events (Kind) are a rollout that finished or halted, a machine that
// rolled itself back or could not, a machine offline longer than a
// threshold (and back online), and a health check that fails outside a
// rollout (and recovers). They are derived from transitions the
// controller sees (track.go): what was already so when the controller
// started — a rollout that had finished, a machine already offline — is
// not announced again at every restart.
//
// Delivery (webhook.go) never blocks the controller: each webhook has its
// own goroutine and a bounded queue (an event that does not fit is
// dropped and logged); a failed POST (network error, 429 or 5xx) is
// retried with exponential backoff. Every POST carries X-Lab-Event,
// X-Lab-Delivery, X-Lab-Timestamp and, when the hook has a secret,
// X-Lab-Signature: "sha256=" and the hex HMAC-SHA256 of the timestamp, a
// dot and the body, so that a receiver can check both who sent it and
// that it is not an old delivery replayed. The body is lab's own JSON
// (generic), an ntfy publish request (ntfy), or {"text": …} as Slack,
// Mattermost and Matrix hookshot incoming webhooks take (slack).
//
// One goroutine (Notifier.Run) owns the tracker; it reads the fleet on
// every change and on a tick of its clock (internal/clock) for the
// offline threshold.
package alert
