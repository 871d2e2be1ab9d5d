package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"

	"github.com/mochi-mqtt/server/v2/packets"
)

// mochiLogger returns the logger mochi writes through: base, scoped with
// component=mqtt. mochi is chatty at INFO (every hook and listener it adds),
// so its records pass at WARN and above only, unless base is enabled for
// DEBUG. A connection that ended in the ordinary way (EOF, reset, closed,
// client DISCONNECT) is logged by mochi as a WARN with an empty message; it
// is demoted to DEBUG, and every empty message gets a constant one.
func mochiLogger(base *slog.Logger) *slog.Logger {
	floor := slog.LevelWarn
	if base.Enabled(context.Background(), slog.LevelDebug) {
		floor = slog.LevelDebug
	}
	h := &mochiHandler{inner: base.Handler(), floor: floor}
	return slog.New(h).With("component", "mqtt")
}

type mochiHandler struct {
	inner slog.Handler
	floor slog.Level
}

func (h *mochiHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.floor && h.inner.Enabled(ctx, l)
}

func (h *mochiHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message != "" {
		return h.inner.Handle(ctx, r)
	}
	err := recordError(r)
	msg := "mqtt event"
	if err != nil {
		msg = "client connection ended"
	}
	level := r.Level
	if err != nil && ordinaryEnd(err) {
		level = slog.LevelDebug
	}
	if level < h.floor || !h.inner.Enabled(ctx, level) {
		return nil
	}
	out := slog.NewRecord(r.Time, level, msg, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(a)
		return true
	})
	return h.inner.Handle(ctx, out)
}

func (h *mochiHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &mochiHandler{inner: h.inner.WithAttrs(as), floor: h.floor}
}

func (h *mochiHandler) WithGroup(name string) slog.Handler {
	return &mochiHandler{inner: h.inner.WithGroup(name), floor: h.floor}
}

// recordError returns the value of the record's "error" attribute, if any.
func recordError(r slog.Record) (err error) {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "error" {
			return true
		}
		if e, ok := a.Value.Any().(error); ok {
			err = e
		}
		return false
	})
	return err
}

// ordinaryEnd reports whether err is how connections end every day: the
// peer went away, the server closed it, or the client sent DISCONNECT.
func ordinaryEnd(err error) bool {
	return errors.Is(err, io.EOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, packets.CodeDisconnect) ||
		errors.Is(err, packets.ErrServerShuttingDown) ||
		errors.Is(err, packets.ErrSessionTakenOver)
}
