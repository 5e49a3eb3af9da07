// Package httpexport is the HTTP export source: it pages through an application's export
// endpoint with GET requests and yields the records of each JSON page. docs/sources.md specifies
// the page format an endpoint must serve and what the connector guarantees.
//
// A page is a JSON object:
//
//	{
//	  "records": [
//	    {"customer_id": "c-1", "key": "orders/42", "content_type": "application/json",
//	     "data": {"total": 12}},
//	    {"customer_id": "c-1", "key": "avatars/7", "content_type": "image/png",
//	     "data_base64": "iVBORw0..."},
//	    {"customer_id": "c-2", "key": "orders/9", "deleted": true}
//	  ],
//	  "next": "opaque token of the next page; absent or empty on the last page",
//	  "watermark": "opaque; required on the last page"
//	}
//
// "tenant" may be set per record (default Config.Tenant). "data" is kept byte for byte as the
// endpoint sent it; "content_type" defaults to application/json for "data" and to
// application/octet-stream for "data_base64".
package httpexport

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/custos-dev/custos/pkg/source"
)

// Source reads data classes from HTTP export endpoints.
type Source struct {
	cfg       Config
	endpoints map[string]*url.URL
	auth      string
	client    *retryablehttp.Client
	transport *http.Transport // ours, closed by Close; nil when Config.Transport is set
}

var _ source.Source = (*Source)(nil)

// New checks cfg and builds the HTTP client.
func New(cfg Config) (*Source, error) {
	cfg = cfg.withDefaults()
	eps, err := cfg.endpoints()
	if err != nil {
		return nil, err
	}
	auth, err := cfg.authValue()
	if err != nil {
		return nil, err
	}
	s := &Source{cfg: cfg, endpoints: eps, auth: auth}
	rt := cfg.Transport
	if rt == nil {
		s.transport = http.DefaultTransport.(*http.Transport).Clone()
		rt = s.transport
	}
	hc := &http.Client{
		Transport: rt,
		Timeout:   cfg.RequestTimeout,
		// The credential must not follow a redirect to another host.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			if req.URL.Host != via[0].URL.Host || (via[0].URL.Scheme == "https" && req.URL.Scheme != "https") {
				return errRedirect
			}
			return nil
		},
	}
	s.client = &retryablehttp.Client{
		HTTPClient:   hc,
		Logger:       nil, // requests are not logged: URLs may carry tokens of the endpoint
		RetryWaitMin: cfg.RetryWaitMin,
		RetryWaitMax: cfg.RetryWaitMax,
		RetryMax:     cfg.RetryMax,
		CheckRetry:   retryablehttp.DefaultRetryPolicy,
		Backoff:      retryablehttp.DefaultBackoff,
		// Hand back the last response, so its status can be reported.
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
	}
	return s, nil
}

var errRedirect = errors.New("redirect to another host or to plain http refused")

// Close releases idle connections.
func (s *Source) Close() error {
	if s.transport != nil {
		s.transport.CloseIdleConnections()
	}
	return nil
}

// cursor is what a snapshot commits: the endpoint's watermark.
type cursor struct {
	V         int    `json:"v"`
	Class     string `json:"class"`
	Watermark string `json:"watermark"`
}

// Snapshot starts reading req.DataClass and fetches the first page, so that bad credentials or a
// broken endpoint show here.
func (s *Source) Snapshot(ctx context.Context, req source.Request) (source.Snapshot, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if req.Shared != "" {
		return nil, fmt.Errorf("%w: httpexport does not share snapshots between tasks", source.ErrInvalidRequest)
	}
	ep, ok := s.endpoints[req.DataClass]
	if !ok {
		return nil, fmt.Errorf("%w: httpexport: %q", source.ErrUnknownClass, req.DataClass)
	}
	sn := &snapshot{s: s, req: req, endpoint: ep}
	if req.Method == source.Incremental {
		var c cursor
		if err := json.Unmarshal(req.Cursor, &c); err != nil || c.V != 1 || c.Watermark == "" {
			return nil, fmt.Errorf("%w: not an httpexport cursor", source.ErrInvalidCursor)
		}
		if c.Class != req.DataClass {
			return nil, fmt.Errorf("%w: cursor of class %q used for class %q", source.ErrInvalidCursor, c.Class, req.DataClass)
		}
		sn.since = c.Watermark
	}
	if err := sn.fetch(ctx, ""); err != nil {
		return nil, err
	}
	return sn, nil
}

// page is one decoded export page.
type page struct {
	Records   []pageRecord `json:"records"`
	Next      string       `json:"next"`
	Watermark string       `json:"watermark"`
}

type pageRecord struct {
	Tenant      string          `json:"tenant"`
	CustomerID  string          `json:"customer_id"`
	Key         string          `json:"key"`
	ContentType string          `json:"content_type"`
	Data        json.RawMessage `json:"data"`
	DataBase64  *string         `json:"data_base64"`
	Deleted     bool            `json:"deleted"`
}

type snapshot struct {
	s        *Source
	req      source.Request
	endpoint *url.URL
	since    string

	mu        sync.Mutex
	page      *page
	i         int
	pages     int
	records   int64
	token     string // the token that fetched the current page
	watermark string
	done      bool
	err       error
	closed    bool
}

// where names the request in errors: scheme, host and path only.
func (sn *snapshot) where() string {
	return fmt.Sprintf("%s://%s%s page %d", sn.endpoint.Scheme, sn.endpoint.Host, sn.endpoint.Path, sn.pages)
}

func (sn *snapshot) fetch(ctx context.Context, token string) error {
	cfg := sn.s.cfg
	if sn.pages >= cfg.MaxPages {
		return fmt.Errorf("%w: httpexport: more than %d pages", source.ErrTooLarge, cfg.MaxPages)
	}
	sn.pages++
	u := *sn.endpoint
	q := u.Query()
	q.Set(cfg.LimitParam, strconv.Itoa(cfg.PageSize))
	if sn.since != "" {
		q.Set(cfg.SinceParam, sn.since)
	}
	if token != "" {
		q.Set(cfg.PageParam, token)
	}
	if r := sn.req.Range; r.From != "" {
		q.Set(cfg.FromParam, r.From)
	}
	if r := sn.req.Range; r.To != "" {
		q.Set(cfg.ToParam, r.To)
	}
	u.RawQuery = q.Encode()
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("%w: httpexport: %s: build request", source.ErrInvalidRequest, sn.where())
	}
	req.Header.Set("Accept", "application/json")
	if cfg.AuthHeader != "" {
		req.Header.Set(cfg.AuthHeader, sn.s.auth)
	}
	resp, err := sn.s.client.Do(req)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		// A *url.Error repeats the URL, query included: keep only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, errRedirect) {
			return fmt.Errorf("%w: httpexport: %s: %v", source.ErrInvalidRequest, sn.where(), err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("httpexport: %s: %w", sn.where(), ctx.Err())
		}
		return fmt.Errorf("httpexport: GET %s failed after %d retries: %w", sn.where(), cfg.RetryMax, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: httpexport: GET %s: HTTP %d (check %s)", source.ErrUnauthorized, sn.where(), resp.StatusCode, authHint(cfg))
	case resp.StatusCode == http.StatusGone:
		return fmt.Errorf("%w: httpexport: GET %s: HTTP 410: the endpoint no longer accepts this watermark or page token", source.ErrInvalidCursor, sn.where())
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented:
		return fmt.Errorf("httpexport: GET %s: HTTP %d after %d retries", sn.where(), resp.StatusCode, cfg.RetryMax)
	default:
		return fmt.Errorf("%w: httpexport: GET %s: HTTP %d", source.ErrPermanent, sn.where(), resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !hasJSONSuffix(mt)) {
			return fmt.Errorf("%w: httpexport: GET %s: content type %q is not JSON", source.ErrMalformed, sn.where(), ct)
		}
	}
	body := &countingReader{r: io.LimitReader(resp.Body, cfg.MaxPageBytes+1)}
	var p page
	dec := json.NewDecoder(body)
	err = dec.Decode(&p)
	if body.n > cfg.MaxPageBytes {
		return fmt.Errorf("%w: httpexport: GET %s: page larger than %d bytes (MaxPageBytes)", source.ErrTooLarge, sn.where(), cfg.MaxPageBytes)
	}
	if body.err != nil {
		// The connection failed mid-body: transient, unlike a page that is wrong.
		return fmt.Errorf("httpexport: GET %s: read page: %w", sn.where(), body.err)
	}
	if err != nil {
		return sn.malformed(err)
	}
	if dec.More() {
		return fmt.Errorf("%w: httpexport: GET %s: data after the page's JSON object", source.ErrMalformed, sn.where())
	}
	if p.Records == nil {
		return fmt.Errorf("%w: httpexport: GET %s: page has no \"records\" array", source.ErrMalformed, sn.where())
	}
	if p.Next != "" && p.Next == token {
		return fmt.Errorf("%w: httpexport: GET %s: \"next\" repeats the token of this page (a loop)", source.ErrMalformed, sn.where())
	}
	if p.Next == "" && p.Watermark == "" {
		return fmt.Errorf("%w: httpexport: GET %s: the last page has no \"watermark\"", source.ErrMalformed, sn.where())
	}
	sn.page, sn.i, sn.token = &p, 0, token
	return nil
}

// malformed reports a page that did not decode, saying where but not quoting it.
func (sn *snapshot) malformed(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("%w: httpexport: GET %s: invalid JSON at byte %d", source.ErrMalformed, sn.where(), se.Offset)
	case errors.As(err, &te):
		return fmt.Errorf("%w: httpexport: GET %s: field %q has the wrong JSON type (%s)", source.ErrMalformed, sn.where(), te.Field, te.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: httpexport: GET %s: the page is empty or cut short", source.ErrMalformed, sn.where())
	}
	return fmt.Errorf("%w: httpexport: GET %s: the page does not decode", source.ErrMalformed, sn.where())
}

// countingReader counts the bytes read and keeps the first read error other than io.EOF.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

func hasJSONSuffix(mt string) bool { return len(mt) > 5 && mt[len(mt)-5:] == "+json" }

func authHint(cfg Config) string {
	switch {
	case cfg.AuthHeader == "":
		return "the endpoint wants credentials: set AuthHeader and AuthEnv"
	case cfg.AuthEnv != "":
		return "the credential in $" + cfg.AuthEnv
	default:
		return "the AuthValue credential"
	}
}

// Next returns the next record of the export.
func (sn *snapshot) Next(ctx context.Context) (source.Record, error) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.err != nil {
		return source.Record{}, sn.err
	}
	if sn.closed {
		return source.Record{}, errors.New("httpexport: snapshot is closed")
	}
	rec, err := sn.next(ctx)
	if err != nil && err != io.EOF {
		sn.err = err
	}
	return rec, err
}

func (sn *snapshot) next(ctx context.Context) (source.Record, error) {
	for {
		if sn.done {
			return source.Record{}, io.EOF
		}
		if err := ctx.Err(); err != nil {
			return source.Record{}, err
		}
		if sn.i == len(sn.page.Records) {
			if sn.page.Next == "" {
				sn.watermark = sn.page.Watermark
				sn.done = true
				continue
			}
			if err := sn.fetch(ctx, sn.page.Next); err != nil {
				return source.Record{}, err
			}
			continue
		}
		pr := sn.page.Records[sn.i]
		sn.page.Records[sn.i] = pageRecord{} // let the bytes go once handed out
		sn.i++
		rec, err := sn.record(pr)
		if err != nil {
			return source.Record{}, err
		}
		if !sn.req.Range.Contains(rec.CustomerID) {
			continue
		}
		if max := sn.s.cfg.MaxRecords; max > 0 && sn.records >= max {
			return source.Record{}, fmt.Errorf("%w: httpexport: more than %d records", source.ErrTooLarge, max)
		}
		sn.records++
		return rec, nil
	}
}

// record checks one page record. Errors name its position, never its content.
func (sn *snapshot) record(pr pageRecord) (source.Record, error) {
	bad := func(what string) error {
		return fmt.Errorf("%w: httpexport: GET %s: record %d %s", source.ErrMalformed, sn.where(), sn.i-1, what)
	}
	rec := source.Record{Tenant: pr.Tenant, CustomerID: pr.CustomerID, Key: pr.Key, ContentType: pr.ContentType, Deleted: pr.Deleted}
	if rec.Tenant == "" {
		rec.Tenant = sn.s.cfg.Tenant
	}
	switch {
	case rec.Tenant == "":
		return rec, bad("has no tenant (and Config.Tenant is empty)")
	case rec.CustomerID == "":
		return rec, bad("has no customer_id")
	case rec.Key == "":
		return rec, bad("has no key")
	}
	hasData := len(pr.Data) > 0 && string(pr.Data) != "null"
	switch {
	case pr.Deleted:
		if hasData || pr.DataBase64 != nil {
			return rec, bad("is deleted but carries data")
		}
	case hasData && pr.DataBase64 != nil:
		return rec, bad("has both data and data_base64")
	case hasData:
		rec.Data = []byte(pr.Data)
		if rec.ContentType == "" {
			rec.ContentType = "application/json"
		}
	case pr.DataBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*pr.DataBase64)
		if err != nil {
			return rec, bad("has data_base64 that is not standard base64")
		}
		rec.Data = b
		if rec.ContentType == "" {
			rec.ContentType = "application/octet-stream"
		}
	default:
		return rec, bad("has neither data nor data_base64")
	}
	return rec, nil
}

// Cursor is the last page's watermark, as the cursor of the next incremental.
func (sn *snapshot) Cursor() ([]byte, error) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if !sn.done {
		return nil, source.ErrCursorNotReady
	}
	b, err := json.Marshal(cursor{V: 1, Class: sn.req.DataClass, Watermark: sn.watermark})
	return b, err
}

// Close ends the snapshot; nothing is held open between pages.
func (sn *snapshot) Close() error {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	sn.closed = true
	sn.page = nil
	return nil
}
