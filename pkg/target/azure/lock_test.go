package azure

// Azurite cannot apply immutability, so these tests check what the target sends and how it
// reads the answers against a small fake of the blob service that speaks the REST API's
// headers. They pin down the wire format only; docs/targets/azure.md says what remains
// untested against the real service.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/custos-dev/custos/pkg/target"
)

// fakeService answers just enough of the blob API for Put and Delete of one container.
type fakeService struct {
	mu        sync.Mutex
	immutable bool              // the container reports version-level immutability
	head      map[string]string // extra headers of a blob's properties; nil: the blob is missing
	deleteErr string            // error code Delete answers with 409, if set
	commitErr string            // error code Put Blob and Put Block List answer with 501, if set
	requests  []*http.Request   // every request, bodies drained
}

func (f *fakeService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r)
	q := r.URL.Query()
	fail := func(status int, code string) {
		w.Header().Set("x-ms-error-code", code)
		w.WriteHeader(status)
	}
	switch {
	case q.Get("restype") == "container":
		if f.immutable {
			w.Header().Set("x-ms-immutable-storage-with-versioning-enabled", "true")
		}
	case r.Method == http.MethodHead:
		if f.head == nil {
			fail(http.StatusNotFound, "BlobNotFound")
			return
		}
		w.Header().Set("Content-Length", "6")
		w.Header().Set("ETag", `"0x1"`)
		w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		for k, v := range f.head {
			w.Header().Set(k, v)
		}
	case r.Method == http.MethodPut && f.commitErr != "" && q.Get("comp") != "block":
		fail(http.StatusNotImplemented, f.commitErr)
	case r.Method == http.MethodPut:
		w.Header().Set("ETag", `"0x2"`)
		w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusCreated)
	case r.Method == http.MethodDelete:
		if f.deleteErr != "" {
			fail(http.StatusConflict, f.deleteErr)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	default:
		fail(http.StatusBadRequest, "UnsupportedHttpVerb")
	}
}

// find returns the requests with method whose query has comp (empty: no comp).
func (f *fakeService) find(method, comp string) []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*http.Request
	for _, r := range f.requests {
		if r.Method == method && r.URL.Query().Get("comp") == comp {
			out = append(out, r)
		}
	}
	return out
}

func newFake(t *testing.T, f *fakeService, edit func(*Config)) *Target {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	cfg := Config{
		AccountURL:  srv.URL + "/acct",
		Container:   "c",
		AccountName: "acct",
		AccountKey:  "a2V5", // any base64: the fake does not check signatures
		BlockSize:   4,
	}
	if edit != nil {
		edit(&cfg)
	}
	tg, err := newTarget(t.Context(), cfg, &http.Client{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func TestLockTravelsWithTheCommit(t *testing.T) {
	until := time.Date(2031, 5, 6, 7, 8, 9, 500_000_000, time.UTC) // rounded up to :10
	data := []byte("locked")
	sum := sha256.Sum256(data)
	for _, c := range []struct {
		name     string
		size     int64 // block size
		unlocked bool
		opts     target.PutOptions
		mode     string
		hold     string
	}{
		{"staged, retained", 4, false, target.PutOptions{RetainUntil: until}, "locked", ""},
		{"staged, retained unlocked", 4, true, target.PutOptions{RetainUntil: until}, "unlocked", ""},
		{"one request, held", 1 << 20, false, target.PutOptions{LegalHold: true}, "", "true"},
		{"one request, both", 1 << 20, false, target.PutOptions{LegalHold: true, RetainUntil: until}, "locked", "true"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeService{immutable: true}
			tg := newFake(t, f, func(cfg *Config) { cfg.BlockSize, cfg.UnlockedRetention = c.size, c.unlocked })
			c.opts.SHA256 = sum
			if err := tg.Put(t.Context(), "x", bytes.NewReader(data), int64(len(data)), c.opts); err != nil {
				t.Fatalf("Put: %v", err)
			}
			comp := "blocklist"
			if c.size > int64(len(data)) {
				comp = ""
			}
			commits := f.find(http.MethodPut, comp)
			if len(commits) != 1 {
				t.Fatalf("%d PUT comp=%q requests, want 1", len(commits), comp)
			}
			h := commits[0].Header
			if got := h.Get("If-None-Match"); got != "*" {
				t.Errorf("If-None-Match = %q, want *", got)
			}
			if got := h.Get("x-ms-meta-sha256"); got == "" {
				t.Error("no sha256 metadata")
			}
			if got := h.Get("x-ms-immutability-policy-mode"); !strings.EqualFold(got, c.mode) {
				t.Errorf("policy mode = %q, want %q", got, c.mode)
			}
			if c.mode != "" {
				got, err := http.ParseTime(h.Get("x-ms-immutability-policy-until-date"))
				if want := until.Truncate(time.Second).Add(time.Second); err != nil || !got.Equal(want) {
					t.Errorf("policy until = %v, %v; want %v", got, err, want)
				}
			}
			if got := h.Get("x-ms-legal-hold"); got != c.hold {
				t.Errorf("legal hold = %q, want %q", got, c.hold)
			}
			for _, b := range f.find(http.MethodPut, "block") {
				if b.Header.Get("Content-MD5") == "" {
					t.Error("a block without Content-MD5")
				}
				for k := range b.Header {
					if strings.Contains(strings.ToLower(k), "immutability") || strings.Contains(strings.ToLower(k), "legal-hold") {
						t.Errorf("a block carries %s", k)
					}
				}
			}
		})
	}
}

// TestLockedPutRefusedByService covers a service that reports version-level immutability but
// refuses the lock on the commit as Azurite refuses its immutability calls.
func TestLockedPutRefusedByService(t *testing.T) {
	f := &fakeService{immutable: true, commitErr: "APINotImplemented"}
	tg := newFake(t, f, nil)
	data := []byte("locked")
	err := tg.Put(t.Context(), "x", bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data), LegalHold: true})
	if !errors.Is(err, target.ErrPermanent) || !strings.Contains(fmt.Sprint(err), "immutability not supported by this service") {
		t.Errorf("locked Put answered 501 = %v, want the permanent 'immutability not supported' error", err)
	}
}

func TestDeleteRefusesLockedObject(t *testing.T) {
	future := time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)
	past := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	for _, c := range []struct {
		name      string
		head      map[string]string
		deleteErr string
		want      error
		deletes   int
	}{
		{"legal hold", map[string]string{"x-ms-legal-hold": "true"}, "", target.ErrLocked, 0},
		{"retained", map[string]string{"x-ms-immutability-policy-until-date": future, "x-ms-immutability-policy-mode": "locked"}, "", target.ErrLocked, 0},
		{"retention over", map[string]string{"x-ms-immutability-policy-until-date": past}, "", nil, 1},
		{"service says policy", map[string]string{}, "BlobImmutableDueToPolicy", target.ErrLocked, 1},
		{"service says legal hold", map[string]string{}, "BlobImmutableDueToLegalHold", target.ErrLocked, 1},
		{"missing", nil, "", target.ErrNotFound, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeService{head: c.head, deleteErr: c.deleteErr}
			tg := newFake(t, f, nil)
			err := tg.Delete(t.Context(), "x")
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("Delete = %v, want %v", err, c.want)
			}
			dels := f.find(http.MethodDelete, "")
			if len(dels) != c.deletes {
				t.Fatalf("%d DELETE requests, want %d", len(dels), c.deletes)
			}
			if len(dels) == 1 && dels[0].Header.Get("If-Match") != `"0x1"` {
				t.Errorf("DELETE If-Match = %q, want the ETag read before", dels[0].Header.Get("If-Match"))
			}
		})
	}
}

func respErr(t *testing.T, status int, code string) error {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://example.invalid/acct/c/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp := &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: req}
	resp.Header.Set("x-ms-error-code", code)
	return runtime.NewResponseError(resp)
}

func TestClassify(t *testing.T) {
	ctx := t.Context()
	for _, c := range []struct {
		status int
		code   string
		want   error // nil: transient
	}{
		{404, "BlobNotFound", target.ErrNotFound},
		{404, "ContainerNotFound", target.ErrPermanent},
		{409, "BlobAlreadyExists", target.ErrExists},
		{409, "BlobImmutableDueToPolicy", target.ErrLocked},
		{409, "BlobImmutableDueToLegalHold", target.ErrLocked},
		{416, "InvalidRange", target.ErrInvalidRange},
		{403, "AuthenticationFailed", target.ErrPermanent},
		{400, "InvalidHeaderValue", target.ErrPermanent},
		{501, "APINotImplemented", target.ErrPermanent},
		{400, "Md5Mismatch", nil},
		{408, "", nil},
		{429, "", nil},
		{500, "InternalError", nil},
		{503, "ServerBusy", nil},
		{500, "OperationTimedOut", nil},
		{502, "", nil},
	} {
		err := classify(ctx, respErr(t, c.status, c.code))
		var re *azcore.ResponseError
		if !errors.As(err, &re) {
			t.Errorf("%d %s: the SDK's error is lost: %v", c.status, c.code, err)
		}
		if c.want == nil {
			if errors.Is(err, target.ErrPermanent) {
				t.Errorf("%d %s = %v, want transient", c.status, c.code, err)
			}
			continue
		}
		if !errors.Is(err, c.want) || !errors.Is(err, target.ErrPermanent) {
			t.Errorf("%d %s = %v, want %v", c.status, c.code, err, c.want)
		}
	}
	for status, permanent := range map[int]bool{401: true, 400: true, 429: false, 503: false} {
		authErr := &azidentity.AuthenticationFailedError{RawResponse: &http.Response{StatusCode: status}}
		if err := classify(ctx, fmt.Errorf("token: %w", authErr)); errors.Is(err, target.ErrPermanent) != permanent {
			t.Errorf("credential refused with %d: permanent = %v, want %v", status, !permanent, permanent)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := classify(cancelled, respErr(t, 500, "InternalError")); !errors.Is(err, context.Canceled) {
		t.Errorf("classify after cancel = %v, want context.Canceled", err)
	}
}
