package httpexport

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// exportServer is an in-process export endpoint that follows the page format of the package doc
// and serves consistent exports: the first page fixes a version (the watermark) and every page of
// that export shows the data as of that version, however much is written meanwhile.
type exportServer struct {
	t      testing.TB
	srv    *httptest.Server
	secret string // required in X-Api-Key when set

	mu       sync.Mutex
	seq      int64
	log      []version // every write, in order
	requests int
	// fail, when set, answers a request instead of the export (return false to serve it).
	fail func(w http.ResponseWriter, r *http.Request, n int) bool
}

type version struct {
	seq      int64
	customer string
	key      string
	value    string
	deleted  bool
}

func newExportServer(t testing.TB, secret string) *exportServer {
	e := &exportServer{t: t, secret: secret}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *exportServer) URL() string { return e.srv.URL + "/export" }

func (e *exportServer) put(customer, key, value string, deleted bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	e.log = append(e.log, version{e.seq, customer, key, value, deleted})
}

func (e *exportServer) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.requests
}

// asOf returns, for every record changed in (since, at], its latest version at "at", ordered by
// customer and key.
func (e *exportServer) asOf(since, at int64) []version {
	latest := map[[2]string]version{}
	for _, v := range e.log {
		if v.seq <= at {
			latest[[2]string{v.customer, v.key}] = v
		}
	}
	var out []version
	for _, v := range latest {
		if v.seq > since {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b version) int {
		return strings.Compare(a.customer+"\x00"+a.key, b.customer+"\x00"+b.key)
	})
	return out
}

func (e *exportServer) serve(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.requests++
	if e.fail != nil && e.fail(w, r, e.requests) {
		return
	}
	if r.URL.Path != "/export" || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	if e.secret != "" && r.Header.Get("X-Api-Key") != e.secret {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	q := r.URL.Query()
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit <= 0 {
		http.Error(w, "limit", http.StatusBadRequest)
		return
	}
	var since int64
	if s := q.Get("since"); s != "" {
		if since, err = strconv.ParseInt(s, 10, 64); err != nil {
			http.Error(w, "since", http.StatusBadRequest)
			return
		}
	}
	// Page token: "<export version>:<offset>".
	at, off := e.seq, 0
	if c := q.Get("cursor"); c != "" {
		a, o, _ := strings.Cut(c, ":")
		at, _ = strconv.ParseInt(a, 10, 64)
		off, _ = strconv.Atoi(o)
	}
	var rows []version
	for _, v := range e.asOf(since, at) {
		if v.deleted && !q.Has("since") {
			continue // a full export lists live records only
		}
		if f := q.Get("customer_from"); f != "" && v.customer < f {
			continue
		}
		if to := q.Get("customer_to"); to != "" && v.customer >= to {
			continue
		}
		rows = append(rows, v)
	}
	type rec struct {
		CustomerID string          `json:"customer_id"`
		Key        string          `json:"key"`
		Data       json.RawMessage `json:"data,omitempty"`
		Deleted    bool            `json:"deleted,omitempty"`
	}
	p := struct {
		Records   []rec  `json:"records"`
		Next      string `json:"next,omitempty"`
		Watermark string `json:"watermark,omitempty"`
	}{Records: []rec{}}
	end := min(off+limit, len(rows))
	for _, v := range rows[min(off, len(rows)):end] {
		rc := rec{CustomerID: v.customer, Key: v.key, Deleted: v.deleted}
		if !v.deleted {
			rc.Data, _ = json.Marshal(map[string]string{"value": v.value})
		}
		p.Records = append(p.Records, rc)
	}
	if end < len(rows) {
		p.Next = fmt.Sprintf("%d:%d", at, end)
	} else {
		p.Watermark = strconv.FormatInt(at, 10)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(p)
}
