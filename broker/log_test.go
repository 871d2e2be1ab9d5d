package broker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
)

func TestMochiLogger(t *testing.T) {
	for _, tc := range []struct {
		name  string
		base  slog.Level
		emit  func(l *slog.Logger)
		want  string // substring; "" = nothing logged
		level string
	}{
		{"info hidden", slog.LevelInfo, func(l *slog.Logger) { l.Info("added hook", "hook", "x") }, "", ""},
		{"warn passes", slog.LevelInfo, func(l *slog.Logger) { l.Warn("client store quota reached", "client", "n1") },
			`msg="client store quota reached" component=mqtt client=n1`, "WARN"},
		{"eof demoted", slog.LevelInfo, func(l *slog.Logger) { l.Warn("", "error", io.EOF) }, "", ""},
		{"wrapped eof demoted", slog.LevelInfo, func(l *slog.Logger) { l.Warn("", "error", fmt.Errorf("read: %w", io.EOF)) }, "", ""},
		{"real error named", slog.LevelInfo, func(l *slog.Logger) { l.Warn("", "error", errors.New("packet too large")) },
			`msg="client connection ended" component=mqtt error="packet too large"`, "WARN"},
		{"debug shows info", slog.LevelDebug, func(l *slog.Logger) { l.Info("added hook", "hook", "x") },
			`msg="added hook" component=mqtt hook=x`, "INFO"},
		{"debug shows eof", slog.LevelDebug, func(l *slog.Logger) { l.Warn("", "error", io.EOF) },
			`msg="client connection ended" component=mqtt error=EOF`, "DEBUG"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.base}))
			tc.emit(mochiLogger(base))
			got := buf.String()
			if tc.want == "" {
				if got != "" {
					t.Fatalf("logged %q, want nothing", got)
				}
				return
			}
			if !strings.Contains(got, tc.want) || !strings.Contains(got, "level="+tc.level) {
				t.Fatalf("logged %q, want %q at %s", got, tc.want, tc.level)
			}
		})
	}
}
