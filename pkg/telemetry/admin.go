package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Default admin listeners: loopback only, so metrics are not exposed beyond the host unless an
// operator says so. The scheduler has its own port so both can run on one host.
const (
	DefaultWorkerAdminListen    = "127.0.0.1:9464"
	DefaultSchedulerAdminListen = "127.0.0.1:9465"
)

// AdminOff as the listen address turns the admin listener off.
const AdminOff = "off"

// ErrAdminStarted is returned by Admin.Start when the listener already runs.
var ErrAdminStarted = errors.New("telemetry: admin listener already started")

// AdminConfig configures the admin HTTP listener.
type AdminConfig struct {
	// Listen is "host:port" ("127.0.0.1:0" picks a free port; see Admin.Addr).
	Listen string
	// Metrics serves /metrics (Metrics.Handler); nil answers 404 there.
	Metrics http.Handler
	// Healthy answers /healthz: nil error means 200 "ok", an error 503 with its text. Nil
	// means always healthy (the process is up).
	Healthy func(ctx context.Context) error
	// Handlers are served beside them, by GET pattern ("/" for the status page of custos server).
	Handlers map[string]http.Handler
	Logger   *slog.Logger
}

// Admin is the admin HTTP listener: /metrics and /healthz. New, Start, Stop like every Custos
// long-running part; Stop is safe before Start and twice.
type Admin struct {
	cfg AdminConfig

	mu   sync.Mutex
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// NewAdmin returns a stopped admin listener.
func NewAdmin(cfg AdminConfig) *Admin {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Admin{cfg: cfg}
}

// Start binds the address and serves in the background. The error of a taken port is returned
// here, not later.
func (a *Admin) Start(_ context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.srv != nil {
		return ErrAdminStarted
	}
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("telemetry: admin listener: %w", err)
	}
	mux := http.NewServeMux()
	if a.cfg.Metrics != nil {
		mux.Handle("GET /metrics", a.cfg.Metrics)
	}
	mux.HandleFunc("GET /healthz", a.healthz)
	for pattern, h := range a.cfg.Handlers {
		if pattern == "/" {
			pattern = "/{$}" // the root only: other paths stay 404
		}
		mux.Handle("GET "+pattern, h)
	}
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	a.ln, a.done = ln, make(chan struct{})
	go func(srv *http.Server, done chan struct{}) {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.cfg.Logger.Error("admin listener stopped", "err", err)
		}
	}(a.srv, a.done)
	a.cfg.Logger.Info("admin listener started", "addr", ln.Addr().String())
	return nil
}

// Addr is the bound address ("127.0.0.1:9464"), or "" before Start.
func (a *Admin) Addr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ln == nil {
		return ""
	}
	return a.ln.Addr().String()
}

// Stop closes the listener and waits for requests in progress until ctx ends.
func (a *Admin) Stop(ctx context.Context) error {
	a.mu.Lock()
	srv, done := a.srv, a.done
	a.srv, a.ln, a.done = nil, nil, nil
	a.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		_ = srv.Close()
	}
	<-done
	return err
}

func (a *Admin) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if a.cfg.Healthy != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := a.cfg.Healthy(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err)
			return
		}
	}
	fmt.Fprintln(w, "ok")
}
