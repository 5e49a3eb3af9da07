package node_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/alert"
	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/drill"
	"github.com/custos-dev/custos/pkg/node"
)

func TestMain(m *testing.M) {
	// The webhook's HTTP client keeps idle connections; they are not goroutines this test owns.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"), goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// A failed drill fires one CustosDrillFailed alert at the webhook; a second failure of the same
// class and target does not post again; the next pass resolves it once.
func TestDrillAlertsReachTheWebhook(t *testing.T) {
	var mu sync.Mutex
	var got []alert.Payload
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p alert.Payload
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			t.Errorf("payload: %v", err)
		}
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
	}))
	defer srv.Close()
	cfg := &config.Config{Alerts: config.Alerts{WebhookURL: srv.URL}}
	log := slog.New(slog.DiscardHandler)
	n, err := node.Notifier(cfg, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	dc := node.DrillConfig(cfg, n, log)
	ctx := context.Background()
	failed := drill.Result{Class: "critical", Target: "fs:b", Outcome: "failed", Reason: "2 items failed their checksum"}
	dc.Alert(ctx, failed)
	dc.Alert(ctx, failed)
	dc.Resolve(ctx, drill.Result{Class: "critical", Target: "fs:b", Outcome: "passed"})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0].Status != "firing" || got[1].Status != "resolved" {
		t.Fatalf("webhook got %+v, want one firing then one resolved", got)
	}
	a := got[0].Alerts[0]
	if a.Labels["alertname"] != "CustosDrillFailed" || a.Labels["class"] != "critical" || a.Labels["target"] != "fs:b" {
		t.Errorf("firing alert labels %v", a.Labels)
	}
}
