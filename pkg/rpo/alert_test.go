package rpo_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/alert"
	"github.com/custos-dev/custos/pkg/rpo"
)

// hook is an Alertmanager-style webhook receiver that fails its first failFirst requests.
type hook struct {
	mu        sync.Mutex
	failFirst int
	requests  int
	got       []alert.Payload // accepted deliveries
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests++
	if h.requests <= h.failFirst {
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	var p alert.Payload
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.got = append(h.got, p)
}

// forClass returns the statuses delivered for class, in order.
func (h *hook) forClass(class string) []alert.PayloadAlert {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []alert.PayloadAlert
	for _, p := range h.got {
		for _, a := range p.Alerts {
			if a.Labels["class"] == class {
				out = append(out, a)
			}
		}
	}
	return out
}

// An RPO breach under a simulated clock posts one firing webhook however many checks see it,
// and one resolved webhook when a new backup meets the RPO again; a receiver that fails twice
// then succeeds still gets exactly one delivery of each.
func TestBreachNotifiesWebhookOnce(t *testing.T) {
	t.Parallel()
	for _, failFirst := range []int{0, 2} {
		h := &hook{failFirst: failFirst}
		srv := httptest.NewServer(h)
		defer srv.Close()
		var clk *clock
		b := setup(t, time.Minute, func(c *rpo.Config) {
			clk = c.Clock.(*clock)
			wh, err := alert.NewWebhook(alert.WebhookConfig{URL: srv.URL, Clock: clk,
				RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			c.Notifier = wh
		})
		b.commit(t, "critical", t0)
		b.check(t, t0.Add(47*time.Hour))
		if got := h.forClass("critical"); len(got) != 0 {
			t.Fatalf("failFirst=%d: %d notifications before the breach: %+v", failFirst, len(got), got)
		}
		for _, at := range []time.Duration{49 * time.Hour, 50 * time.Hour, 60 * time.Hour} {
			b.check(t, t0.Add(at))
		}
		got := h.forClass("critical")
		if len(got) != 1 || got[0].Status != alert.StatusFiring || got[0].Labels[alert.LabelName] != rpo.AlertName ||
			got[0].Labels["severity"] != "critical" || !got[0].StartsAt.Equal(t0.Add(48*time.Hour)) {
			t.Fatalf("failFirst=%d: after the breach got %+v, want one firing alert starting at %v", failFirst, got, t0.Add(48*time.Hour))
		}
		b.commit(t, "critical", t0.Add(61*time.Hour))
		b.check(t, t0.Add(61*time.Hour))
		b.check(t, t0.Add(62*time.Hour))
		got = h.forClass("critical")
		if len(got) != 2 || got[1].Status != alert.StatusResolved || !got[1].EndsAt.Equal(t0.Add(61*time.Hour)) ||
			!got[1].StartsAt.Equal(got[0].StartsAt) {
			t.Fatalf("failFirst=%d: after recovery got %+v, want firing then one resolved at %v", failFirst, got, t0.Add(61*time.Hour))
		}
		h.mu.Lock()
		for _, p := range h.got {
			if p.Version != "4" || p.Status != p.Alerts[0].Status || p.Receiver == "" {
				t.Errorf("payload is not Alertmanager version 4: %+v", p)
			}
		}
		if failFirst > 0 && h.requests != len(h.got)+failFirst {
			t.Errorf("%d requests for %d deliveries, want %d failed tries more", h.requests, len(h.got), failFirst)
		}
		h.mu.Unlock()
	}
}
