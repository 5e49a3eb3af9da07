package restore

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// Progress is how far a restore is: items done (restored or failed) and the stored bytes of
// those items, out of the items it will read.
type Progress struct {
	Items      int
	TotalItems int
	Bytes      int64
	TotalBytes int64
}

// meter turns Progress into a rate and an estimate of the time left, throttled to one report
// per interval (the last, Items == TotalItems, is always reported).
type meter struct {
	now      func() time.Time
	interval time.Duration

	mu    sync.Mutex
	start time.Time
	last  time.Time
}

type rate struct {
	Progress
	elapsed time.Duration
	perSec  float64       // bytes per second since the start
	eta     time.Duration // -1 while unknown
}

func (m *meter) next(p Progress) (rate, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if m.start.IsZero() {
		m.start = now
	}
	final := p.Items >= p.TotalItems
	if !final && !m.last.IsZero() && now.Sub(m.last) < m.interval {
		return rate{}, false
	}
	m.last = now
	r := rate{Progress: p, elapsed: now.Sub(m.start), eta: -1}
	if s := r.elapsed.Seconds(); s > 0 {
		r.perSec = float64(p.Bytes) / s
	}
	if final {
		r.eta = 0
	} else if r.perSec > 0 {
		r.eta = time.Duration(float64(p.TotalBytes-p.Bytes) / r.perSec * float64(time.Second))
	}
	return r, true
}

// ProgressLine returns a Progress func that keeps one terminal line up to date on w: items,
// bytes read, rate and time left, at most ten times a second. now is the clock (time.Now).
func ProgressLine(w io.Writer, now func() time.Time) func(Progress) {
	m := &meter{now: now, interval: 100 * time.Millisecond}
	return func(p Progress) {
		r, ok := m.next(p)
		if !ok {
			return
		}
		eta := "?"
		if r.eta >= 0 {
			eta = r.eta.Round(time.Second).String()
		}
		fmt.Fprintf(w, "\r\033[Krestoring %d/%d items, %s/%s, %s/s, ETA %s",
			r.Items, r.TotalItems, mib(r.Bytes), mib(r.TotalBytes), mib(int64(r.perSec)), eta)
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// ProgressRecord is one line ProgressJSON writes.
type ProgressRecord struct {
	Items          int     `json:"items"`
	TotalItems     int     `json:"total_items"`
	Bytes          int64   `json:"bytes"`
	TotalBytes     int64   `json:"total_bytes"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	BytesPerSecond float64 `json:"bytes_per_second"`
	// ETASeconds is the estimated time left; absent until a rate is known.
	ETASeconds *float64 `json:"eta_seconds,omitempty"`
}

// ProgressJSON returns a Progress func that writes one ProgressRecord a line on w, at most once
// per interval and always for the last item. now is the clock (time.Now).
func ProgressJSON(w io.Writer, now func() time.Time, interval time.Duration) func(Progress) {
	m := &meter{now: now, interval: interval}
	enc := json.NewEncoder(w)
	return func(p Progress) {
		r, ok := m.next(p)
		if !ok {
			return
		}
		rec := ProgressRecord{Items: r.Items, TotalItems: r.TotalItems, Bytes: r.Bytes, TotalBytes: r.TotalBytes,
			ElapsedSeconds: r.elapsed.Seconds(), BytesPerSecond: r.perSec}
		if r.eta >= 0 {
			s := r.eta.Seconds()
			rec.ETASeconds = &s
		}
		_ = enc.Encode(rec)
	}
}
