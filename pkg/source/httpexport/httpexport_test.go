package httpexport

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/source"
	"github.com/custos-dev/custos/pkg/source/sourcetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "s3cret-api-key"

func newSource(t testing.TB, cfg Config) *Source {
	t.Helper()
	if cfg.Tenant == "" {
		cfg.Tenant = "acme"
	}
	if cfg.RetryWaitMin == 0 {
		cfg.RetryWaitMin, cfg.RetryWaitMax = time.Millisecond, 10*time.Millisecond
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	sourcetest.Run(t, func(t *testing.T) sourcetest.Harness {
		e := newExportServer(t, secret)
		s := newSource(t, Config{
			Endpoints:  map[string]string{"critical": e.URL()},
			PageSize:   7,
			AuthHeader: "X-Api-Key", AuthValue: secret,
		})
		return sourcetest.Harness{
			Source: s, Class: "critical", Tenant: "acme", Tombstones: true,
			Put:       func(t testing.TB, c, k, v string) { e.put(c, k, v, false) },
			Delete:    func(t testing.TB, c, k string) { e.put(c, k, "", true) },
			RecordKey: func(k string) string { return k },
			Value: func(t testing.TB, rec source.Record) string {
				var m map[string]string
				if err := json.Unmarshal(rec.Data, &m); err != nil {
					t.Errorf("record data %q: %v", rec.Data, err)
				}
				if rec.ContentType != "application/json" {
					t.Errorf("content type %q", rec.ContentType)
				}
				return m["value"]
			},
		}
	})
}

// drain reads a snapshot to the end.
func drain(ctx context.Context, s *Source, req source.Request) ([]source.Record, []byte, error) {
	snap, err := s.Snapshot(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	defer snap.Close()
	var out []source.Record
	for {
		rec, err := snap.Next(ctx)
		if err == io.EOF {
			c, err := snap.Cursor()
			return out, c, err
		}
		if err != nil {
			return out, nil, err
		}
		out = append(out, rec)
	}
}

func full(class string) source.Request { return source.Request{DataClass: class, Method: source.Full} }

func TestPagingAndAuthFromEnv(t *testing.T) {
	e := newExportServer(t, secret)
	for i := range 23 {
		e.put("c", string(rune('a'+i)), "v", false)
	}
	t.Setenv("CUSTOS_EXPORT_KEY", secret)
	s := newSource(t, Config{Endpoints: map[string]string{"critical": e.URL() + "?fixed=1"}, PageSize: 5, AuthHeader: "X-Api-Key", AuthEnv: "CUSTOS_EXPORT_KEY"})
	recs, c, err := drain(context.Background(), s, full("critical"))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 23 || e.count() != 5 {
		t.Errorf("%d records in %d requests, want 23 in 5", len(recs), e.count())
	}
	if !strings.Contains(string(c), `"watermark":"23"`) {
		t.Errorf("cursor %s", c)
	}
}

func TestTransient503IsRetried(t *testing.T) {
	e := newExportServer(t, "")
	for i := range 10 {
		e.put("c", string(rune('a'+i)), "v", false)
	}
	// The second page fails twice with 503 before it is served.
	e.fail = func(w http.ResponseWriter, r *http.Request, n int) bool {
		if n == 2 || n == 3 {
			w.Header().Set("Retry-After", "0")
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return true
		}
		return false
	}
	s := newSource(t, Config{Endpoints: map[string]string{"critical": e.URL()}, PageSize: 6})
	recs, _, err := drain(context.Background(), s, full("critical"))
	if err != nil {
		t.Fatalf("snapshot failed despite retries: %v", err)
	}
	if len(recs) != 10 || e.count() != 4 {
		t.Errorf("%d records in %d requests, want 10 in 4", len(recs), e.count())
	}
}

func TestPersistent503(t *testing.T) {
	e := newExportServer(t, "")
	e.fail = func(w http.ResponseWriter, r *http.Request, n int) bool {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return true
	}
	s := newSource(t, Config{Endpoints: map[string]string{"critical": e.URL()}, RetryMax: 2})
	_, _, err := drain(context.Background(), s, full("critical"))
	if err == nil || errors.Is(err, source.ErrPermanent) || !strings.Contains(err.Error(), "HTTP 503 after 2 retries") {
		t.Errorf("err = %v, want a retryable error naming HTTP 503 and the retries", err)
	}
	if e.count() != 3 {
		t.Errorf("%d requests, want 3", e.count())
	}
}

func TestUnauthorized(t *testing.T) {
	e := newExportServer(t, "the-right-key")
	s := newSource(t, Config{Endpoints: map[string]string{"critical": e.URL()}, AuthHeader: "X-Api-Key", AuthValue: secret})
	_, _, err := drain(context.Background(), s, full("critical"))
	if !errors.Is(err, source.ErrUnauthorized) || !errors.Is(err, source.ErrPermanent) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	if !strings.Contains(err.Error(), "HTTP 401") || strings.Contains(err.Error(), secret) {
		t.Errorf("error %q should name HTTP 401 and never the credential", err)
	}
	if e.count() != 1 {
		t.Errorf("401 was retried: %d requests", e.count())
	}
}

func TestMalformedPages(t *testing.T) {
	for _, tc := range []struct {
		name, ctype, body string
		want              error
		says              string
	}{
		{"not JSON", "text/html", "<html>login</html>", source.ErrMalformed, "not JSON"},
		{"broken JSON", "application/json", `{"records": [{"customer_id": "c", `, source.ErrMalformed, "cut short"},
		{"syntax error", "application/json", `{"records": [}`, source.ErrMalformed, "invalid JSON at byte"},
		{"wrong type", "application/json", `{"records": {"a": 1}}`, source.ErrMalformed, "wrong JSON type"},
		{"no records", "application/json", `{"watermark": "1"}`, source.ErrMalformed, `no "records"`},
		{"no watermark", "application/json", `{"records": []}`, source.ErrMalformed, `no "watermark"`},
		{"trailing data", "application/json", `{"records": [], "watermark": "1"} {}`, source.ErrMalformed, "after the page"},
		{"no key", "application/json", `{"records": [{"customer_id": "c", "data": 1}], "watermark": "1"}`, source.ErrMalformed, "record 0 has no key"},
		{"no data", "application/json", `{"records": [{"customer_id": "c", "key": "k"}], "watermark": "1"}`, source.ErrMalformed, "neither data"},
		{"bad base64", "application/json", `{"records": [{"customer_id": "c", "key": "k", "data_base64": "!!"}], "watermark": "1"}`, source.ErrMalformed, "base64"},
		{"loop", "application/json", `{"records": [], "next": "same"}`, source.ErrMalformed, "loop"},
		{"too large", "application/json", `{"records": [], "watermark": "` + strings.Repeat("x", 300) + `"}`, source.ErrTooLarge, "larger than 256 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				if r.URL.Query().Get("cursor") == "same" || tc.name != "loop" {
					_, _ = io.WriteString(w, tc.body)
					return
				}
				_, _ = io.WriteString(w, `{"records": [], "next": "same"}`)
			}))
			defer srv.Close()
			s := newSource(t, Config{Endpoints: map[string]string{"critical": srv.URL}, MaxPageBytes: 256})
			_, _, err := drain(context.Background(), s, full("critical"))
			if !errors.Is(err, tc.want) || !errors.Is(err, source.ErrPermanent) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("err = %v, want %v saying %q", err, tc.want, tc.says)
			}
		})
	}
}

func TestRecordsFormat(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.export+json; charset=utf-8")
		_, _ = io.WriteString(w, `{"records": [
			{"customer_id": "c1", "key": "doc", "data": {"b": 1, "a": [true]}},
			{"customer_id": "c1", "tenant": "other", "key": "img", "content_type": "image/png", "data_base64": "AAEC"},
			{"customer_id": "c2", "key": "gone", "deleted": true}
		], "watermark": "w"}`)
	}))
	defer srv.Close()
	s := newSource(t, Config{Endpoints: map[string]string{"critical": srv.URL}})
	recs, _, err := drain(context.Background(), s, full("critical"))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	if string(recs[0].Data) != `{"b": 1, "a": [true]}` || recs[0].ContentType != "application/json" || recs[0].Tenant != "acme" {
		t.Errorf("record 0 = %+v", recs[0])
	}
	if string(recs[1].Data) != "\x00\x01\x02" || recs[1].ContentType != "image/png" || recs[1].Tenant != "other" {
		t.Errorf("record 1 = %+v", recs[1])
	}
	if !recs[2].Deleted || recs[2].Data != nil {
		t.Errorf("record 2 = %+v", recs[2])
	}
}

func TestBounds(t *testing.T) {
	e := newExportServer(t, "")
	for i := range 12 {
		e.put("c", string(rune('a'+i)), "v", false)
	}
	s := newSource(t, Config{Endpoints: map[string]string{"critical": e.URL()}, PageSize: 5, MaxPages: 2})
	if _, _, err := drain(context.Background(), s, full("critical")); !errors.Is(err, source.ErrTooLarge) {
		t.Errorf("MaxPages: err = %v", err)
	}
	s = newSource(t, Config{Endpoints: map[string]string{"critical": e.URL()}, PageSize: 5, MaxRecords: 11})
	if _, _, err := drain(context.Background(), s, full("critical")); !errors.Is(err, source.ErrTooLarge) {
		t.Errorf("MaxRecords: err = %v", err)
	}
}

func TestRedirectToAnotherHostRefused(t *testing.T) {
	leak := make(chan string, 1)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leak <- r.Header.Get("X-Api-Key")
	}))
	defer other.Close()
	// 127.0.0.1 and localhost are different hosts to the client.
	target := strings.Replace(other.URL, "127.0.0.1", "localhost", 1)
	srv := httptest.NewServer(http.RedirectHandler(target, http.StatusFound))
	defer srv.Close()
	s := newSource(t, Config{Endpoints: map[string]string{"critical": srv.URL}, AuthHeader: "X-Api-Key", AuthValue: secret})
	_, _, err := drain(context.Background(), s, full("critical"))
	if !errors.Is(err, source.ErrPermanent) || !strings.Contains(err.Error(), "redirect") {
		t.Errorf("err = %v, want a refused redirect", err)
	}
	select {
	case v := <-leak:
		t.Errorf("credential sent to another host: %q", v)
	default:
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no endpoints":        {},
		"relative URL":        {Endpoints: map[string]string{"a": "/export"}},
		"ftp":                 {Endpoints: map[string]string{"a": "ftp://h/x"}},
		"userinfo":            {Endpoints: map[string]string{"a": "https://u:p@h/x"}},
		"value without name":  {Endpoints: map[string]string{"a": "https://h/x"}, AuthValue: "x"},
		"empty env":           {Endpoints: map[string]string{"a": "https://h/x"}, AuthHeader: "X-Api-Key", AuthEnv: "CUSTOS_TEST_UNSET_VARIABLE"},
		"header with a colon": {Endpoints: map[string]string{"a": "https://h/x"}, AuthHeader: "X: y", AuthValue: "x"},
	} {
		if _, err := New(cfg); !errors.Is(err, source.ErrInvalidRequest) {
			t.Errorf("%s: New = %v, want ErrInvalidRequest", name, err)
		}
	}
}
