package health

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// detailLen bounds the output kept in a Result's Detail.
const detailLen = 512

// httpClient is shared by http checks; no keep-alive, so a check measures a
// fresh connection and leaves nothing open.
var httpClient = &http.Client{Transport: &http.Transport{
	Proxy:             nil,
	DisableKeepAlives: true,
}}

func probeHTTP(ctx context.Context, c Check) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL, nil)
	if err != nil {
		return "", err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, detailLen))
	if resp.StatusCode != c.ExpectStatus {
		return "", fmt.Errorf("GET %s: status %d, want %d: %s", c.URL, resp.StatusCode, c.ExpectStatus, clip(body))
	}
	return fmt.Sprintf("GET %s: status %d", c.URL, resp.StatusCode), nil
}

func probeTCP(ctx context.Context, c Check) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.Address)
	if err != nil {
		return "", err
	}
	_ = conn.Close()
	return "connected to " + c.Address, nil
}

func (r *Runner) probeCommand(ctx context.Context, argv []string) (string, error) {
	out, err := r.exec(ctx, argv)
	if err != nil {
		if len(bytes.TrimSpace(out)) > 0 {
			return "", fmt.Errorf("%s: %w: %s", argv[0], err, clip(out))
		}
		return "", fmt.Errorf("%s: %w", argv[0], err)
	}
	return clip(out), nil
}

// probeSystemd: `systemctl is-active <unit>`, or with no unit, healthy when
// `systemctl --failed` lists nothing.
func (r *Runner) probeSystemd(ctx context.Context, unit string) (string, error) {
	if unit != "" {
		out, err := r.exec(ctx, []string{"systemctl", "is-active", unit})
		state := strings.TrimSpace(string(out))
		if err != nil {
			return "", fmt.Errorf("unit %s is %s: %w", unit, clip([]byte(state)), err)
		}
		return "unit " + unit + " is " + state, nil
	}
	out, err := r.exec(ctx, []string{"systemctl", "--failed", "--no-legend", "--plain"})
	if err != nil {
		return "", fmt.Errorf("systemctl --failed: %w: %s", err, clip(out))
	}
	if failed := strings.TrimSpace(string(out)); failed != "" {
		return "", fmt.Errorf("failed units: %s", clip([]byte(failed)))
	}
	return "no failed units", nil
}

// clip returns the last detailLen bytes of b, trimmed.
func clip(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > detailLen {
		b = append([]byte("…"), b[len(b)-detailLen:]...)
	}
	return string(b)
}
