package alert

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lab-fleet/lab/internal/clock"
	"github.com/lab-fleet/lab/proto"
)

// Format is the shape of a webhook's body.
type Format string

// The formats.
const (
	Generic Format = "generic" // lab's Event as JSON
	Ntfy    Format = "ntfy"    // an ntfy JSON publish: the URL names the topic (https://ntfy.sh/my-lab)
	Slack   Format = "slack"   // {"text": …}: Slack, Mattermost, Rocket.Chat, Matrix hookshot incoming webhooks
)

// ParseFormat checks a format's name ("" is generic).
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case "":
		return Generic, nil
	case Generic, Ntfy, Slack:
		return f, nil
	}
	return "", fmt.Errorf("unknown webhook format %q: want generic, ntfy or slack", s)
}

// Webhook is one receiver.
type Webhook struct {
	URL    string
	Format Format
	// Secret, when set, signs every delivery (X-Lab-Signature).
	Secret []byte
	// Events are the kinds it receives; none: all.
	Events []Kind
}

// Check validates a webhook: an absolute http(s) URL; for ntfy, a topic
// in its path.
func (w Webhook) Check() error {
	u, err := url.Parse(w.URL)
	if err != nil {
		return fmt.Errorf("webhook %q: %w", w.URL, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("webhook %q: want an http:// or https:// URL", w.URL)
	}
	if w.Format == Ntfy && strings.Trim(u.Path, "/") == "" {
		return fmt.Errorf("webhook %q: an ntfy URL names its topic (https://ntfy.sh/TOPIC)", w.URL)
	}
	if _, err := ParseFormat(string(w.Format)); err != nil {
		return err
	}
	return nil
}

// String names the webhook in logs without what its URL may hold (Slack's
// and Matrix' URLs are themselves secrets).
func (w Webhook) String() string {
	u, err := url.Parse(w.URL)
	if err != nil {
		return "webhook"
	}
	return u.Scheme + "://" + u.Host
}

func (w Webhook) wants(k Kind) bool { return len(w.Events) == 0 || slices.Contains(w.Events, k) }

// request builds the POST of one event.
func (w Webhook) request(ctx context.Context, ev Event, delivery string, now time.Time) (*http.Request, error) {
	target := w.URL
	var body any = ev
	switch w.Format {
	case Ntfy:
		u, _ := url.Parse(w.URL)
		topic := strings.Trim(u.Path, "/")
		if i := strings.LastIndex(topic, "/"); i >= 0 {
			u.Path, topic = "/"+topic[:i], topic[i+1:]
		} else {
			u.Path = "/"
		}
		target = u.String()
		prio := map[string]int{"info": 3, "warning": 4, "critical": 5}[ev.Severity]
		tags := []string{"lab", string(ev.Kind)}
		if ev.Severity != "info" {
			tags = append(tags, "warning")
		}
		body = map[string]any{"topic": topic, "title": title(ev), "message": ev.Summary, "priority": prio, "tags": tags}
	case Slack:
		body = map[string]string{"text": "*" + title(ev) + "*: " + ev.Summary}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "lab-controller")
	req.Header.Set("X-Lab-Event", string(ev.Kind))
	req.Header.Set("X-Lab-Delivery", delivery)
	req.Header.Set("X-Lab-Timestamp", ts)
	if len(w.Secret) > 0 {
		req.Header.Set("X-Lab-Signature", Sign(w.Secret, ts, b))
	}
	return req, nil
}

// Sign is the X-Lab-Signature of a body sent at timestamp ts (Unix
// seconds, as in X-Lab-Timestamp): "sha256=" and the hex HMAC-SHA256 of
// ts + "." + body.
func Sign(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a delivery's signature and that its timestamp is within
// maxAge of now: what a receiver written in Go does with the headers.
func Verify(secret []byte, ts, signature string, body []byte, now time.Time, maxAge time.Duration) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("X-Lab-Timestamp %q: %w", ts, err)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > maxAge || d < -maxAge {
		return fmt.Errorf("X-Lab-Timestamp is %s away from now: a replay, or a clock off", d.Round(time.Second))
	}
	if !hmac.Equal([]byte(Sign(secret, ts, body)), []byte(signature)) {
		return errors.New("X-Lab-Signature does not match")
	}
	return nil
}

func title(ev Event) string {
	switch ev.Kind {
	case RolloutFinished:
		return "lab: rollout " + ev.State
	case RolloutHalted:
		return "lab: rollout halted"
	}
	return "lab: " + strings.ReplaceAll(string(ev.Kind), "-", " ")
}

// delivery is one webhook's queue and sender.
type delivery struct {
	hook    Webhook
	queue   chan Event
	client  *http.Client
	clock   clock.Clock
	log     *slog.Logger
	backoff time.Duration // first retry delay; doubled up to maxBackoff
	tries   int

	sent, failed, dropped *atomic.Int64 // the Notifier's counters
}

const maxBackoff = 5 * time.Minute

// retryable reports whether a response status is worth another try.
func retryable(code int) bool {
	return code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500
}

// run sends queued events until ctx ends.
func (d *delivery) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-d.queue:
			if err := d.send(ctx, ev); err != nil {
				d.failed.Add(1)
				d.log.Warn("webhook not delivered", "webhook", d.hook.String(), "event", ev.Kind, "err", err)
			} else {
				d.sent.Add(1)
			}
		}
	}
}

// send posts one event, retrying with backoff.
func (d *delivery) send(ctx context.Context, ev Event) error {
	id := proto.NewID()[:16]
	wait := d.backoff
	var last error
	for attempt := 1; attempt <= d.tries; attempt++ {
		if attempt > 1 {
			ch, t := clock.After(d.clock, wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("stopped after %d attempts: %w", attempt-1, last)
			case <-ch:
			}
			wait = min(2*wait, maxBackoff)
		}
		req, err := d.hook.request(ctx, ev, id, d.clock.Now())
		if err != nil {
			return err
		}
		resp, err := d.client.Do(req)
		if err != nil {
			last = err
			d.log.Debug("webhook attempt failed", "webhook", d.hook.String(), "attempt", attempt, "err", err)
			continue
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			if attempt > 1 {
				d.log.Info("webhook delivered after retries", "webhook", d.hook.String(), "event", ev.Kind, "attempts", attempt)
			}
			return nil
		}
		last = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
		if !retryable(resp.StatusCode) {
			return last // the receiver refuses it: another try would be refused too
		}
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && ra > 0 {
			wait = min(time.Duration(ra)*time.Second, maxBackoff)
		}
	}
	return fmt.Errorf("gave up after %d attempts: %w", d.tries, last)
}
