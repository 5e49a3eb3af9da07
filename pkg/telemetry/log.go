package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// Log formats accepted by LogConfig.Format.
const (
	LogFormatJSON = "json"
	LogFormatText = "text"
)

// Log record keys added from a record's context.
const (
	LogKeyTraceID = "trace_id"
	LogKeySpanID  = "span_id"
)

// ErrUnknownLogFormat is returned by NewLogger for a Format other than json, text or "".
var ErrUnknownLogFormat = errors.New("telemetry: unknown log format")

// LogConfig configures a process logger.
type LogConfig struct {
	// Format is "json", "text", or "" for JSON unless Writer is a terminal (people read text,
	// log shippers parse JSON).
	Format string
	// Writer defaults to os.Stderr.
	Writer io.Writer
	// Level defaults to Info.
	Level slog.Leveler
}

// NewLogger returns a logger that writes durations as seconds and adds trace_id and span_id to
// every record logged with a context that carries a span (the *Context methods of slog).
func NewLogger(cfg LogConfig) (*slog.Logger, error) {
	w := cfg.Writer
	if w == nil {
		w = os.Stderr
	}
	opts := &slog.HandlerOptions{Level: cfg.Level, ReplaceAttr: DurationsAsSeconds}
	var h slog.Handler
	switch strings.ToLower(strings.TrimSpace(cfg.Format)) {
	case LogFormatJSON:
		h = slog.NewJSONHandler(w, opts)
	case LogFormatText:
		h = slog.NewTextHandler(w, opts)
	case "":
		if isTerminal(w) {
			h = slog.NewTextHandler(w, opts)
		} else {
			h = slog.NewJSONHandler(w, opts)
		}
	default:
		return nil, fmt.Errorf("%w %q (want json or text)", ErrUnknownLogFormat, cfg.Format)
	}
	return slog.New(TraceHandler(h)), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// DurationsAsSeconds is a slog ReplaceAttr that writes a time.Duration as float seconds (1.5,
// not 1500000000 in JSON nor "1.5s" in text), so log queries compare numbers in one unit.
func DurationsAsSeconds(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.Float64(a.Key, a.Value.Duration().Seconds())
	}
	return a
}

// TraceHandler wraps h so that a record logged with a context carrying a valid span gets that
// span's trace_id and span_id: a log line then leads to its trace, and back.
func TraceHandler(h slog.Handler) slog.Handler { return traceHandler{h} }

type traceHandler struct{ slog.Handler }

func (t traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx == nil {
		return t.Handler.Handle(ctx, r)
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String(LogKeyTraceID, sc.TraceID().String()), slog.String(LogKeySpanID, sc.SpanID().String()))
	}
	if attrs, _ := ctx.Value(logAttrsKey{}).([]slog.Attr); len(attrs) > 0 {
		r = r.Clone()
		r.AddAttrs(attrs...)
	}
	return t.Handler.Handle(ctx, r)
}

type logAttrsKey struct{}

// WithLogAttrs returns a context whose records, logged through a TraceHandler, carry attrs too:
// the event id on every line about one event, wherever in the worker it is logged.
func WithLogAttrs(ctx context.Context, attrs ...slog.Attr) context.Context {
	prev, _ := ctx.Value(logAttrsKey{}).([]slog.Attr)
	return context.WithValue(ctx, logAttrsKey{}, append(slices.Clip(prev), attrs...))
}

func (t traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{t.Handler.WithAttrs(attrs)}
}

func (t traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{t.Handler.WithGroup(name)}
}
