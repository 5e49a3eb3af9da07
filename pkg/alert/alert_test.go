package alert_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/alert"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

type receiver struct {
	mu   sync.Mutex
	down bool
	got  []alert.Payload
	hits int
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hits++
	if r.down {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	var p alert.Payload
	if err := json.NewDecoder(req.Body).Decode(&p); err != nil || req.Header.Get("Content-Type") != "application/json" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.got = append(r.got, p)
}

func (r *receiver) set(down bool) { r.mu.Lock(); r.down = down; r.mu.Unlock() }
func (r *receiver) deliveries() []alert.Payload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]alert.Payload(nil), r.got...)
}

// A delivery that fails after its retries is reported (ErrDelivery) and not remembered, so the
// next report of the same state sends it; once delivered, it is not repeated.
func TestWebhookRetriesOnNextReport(t *testing.T) {
	rcv := &receiver{down: true}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	now := time.Date(2027, 5, 1, 12, 0, 0, 0, time.UTC)
	wh, err := alert.NewWebhook(alert.WebhookConfig{URL: srv.URL, Clock: fixedClock{now}, RetryMax: 1,
		RetryWaitMin: time.Millisecond, RetryWaitMax: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a := alert.Alert{Name: "CustosDrillFailed", Labels: map[string]string{"class": "critical", "target": "s3"}, Firing: true}
	if err := wh.Notify(ctx, a); !errors.Is(err, alert.ErrDelivery) {
		t.Fatalf("Notify to a failing receiver = %v, want ErrDelivery", err)
	}
	if rcv.hits != 2 {
		t.Fatalf("%d tries, want 2 (RetryMax 1)", rcv.hits)
	}
	rcv.set(false)
	for range 3 {
		if err := wh.Notify(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	// Resolved for an alert never fired, and firing for another label set, are separate.
	if err := wh.Notify(ctx, alert.Alert{Name: "CustosDrillFailed", Labels: map[string]string{"class": "other"}}); err != nil {
		t.Fatal(err)
	}
	a.Firing = false
	if err := wh.Notify(ctx, a); err != nil {
		t.Fatal(err)
	}
	got := rcv.deliveries()
	if len(got) != 2 || got[0].Status != alert.StatusFiring || got[1].Status != alert.StatusResolved ||
		!got[0].Alerts[0].StartsAt.Equal(now) || !got[1].Alerts[0].EndsAt.Equal(now) ||
		got[0].Alerts[0].Fingerprint != got[1].Alerts[0].Fingerprint || got[0].Alerts[0].Labels["alertname"] != "CustosDrillFailed" {
		t.Fatalf("deliveries = %+v, want one firing and one resolved of the same alert", got)
	}
}

func TestWebhookRejectsBadInput(t *testing.T) {
	for _, u := range []string{"", "ftp://x/y", "http://", "not a url", "localhost:9093"} {
		if _, err := alert.NewWebhook(alert.WebhookConfig{URL: u}); !errors.Is(err, alert.ErrBadURL) {
			t.Errorf("NewWebhook(%q) = %v, want ErrBadURL", u, err)
		}
	}
	wh, err := alert.NewWebhook(alert.WebhookConfig{URL: "http://127.0.0.1:1/hook"})
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Notify(context.Background(), alert.Alert{Firing: true}); !errors.Is(err, alert.ErrBadAlert) {
		t.Fatalf("alert without a name: %v", err)
	}
	var n alert.Notifier = alert.Nop{}
	if err := n.Notify(context.Background(), alert.Alert{Name: "x", Firing: true}); err != nil {
		t.Fatal(err)
	}
}
