package httpexport

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/custos-dev/custos/pkg/source"
)

// Config configures an HTTP export source.
type Config struct {
	// Endpoints maps each data class to its export URL (http or https). The URL may carry fixed
	// query parameters; errors show only its scheme, host and path.
	Endpoints map[string]string
	// Tenant is the tenant of records that do not name one.
	Tenant string

	// Query parameter names (defaults in brackets): the page token from the previous page's
	// "next" [cursor], the watermark of the last committed snapshot for incrementals [since],
	// the page size [limit], and the customer range [customer_from, customer_to]. The range is
	// also filtered on the client, so an endpoint may ignore it.
	PageParam, SinceParam, LimitParam, FromParam, ToParam string
	// PageSize is sent as LimitParam (default 500).
	PageSize int

	// AuthHeader names a request header carrying a credential, e.g. "Authorization" or
	// "X-Api-Key". Its value comes from the environment variable AuthEnv (preferred) or AuthValue.
	// The value is sent to the endpoint's host only (redirects to other hosts are refused) and is
	// never logged or put in an error.
	AuthHeader string
	AuthEnv    string
	AuthValue  string

	// Bounds: a page body larger than MaxPageBytes (default 32 MiB), more than MaxPages pages
	// (default 100000) or more than MaxRecords records (default 0: no bound) fail the snapshot
	// with source.ErrTooLarge.
	MaxPageBytes int64
	MaxPages     int
	MaxRecords   int64

	// Retries of one page request on connection errors, 429 and 5xx: RetryMax retries (default
	// 4), exponential backoff between RetryWaitMin (default 500ms) and RetryWaitMax (default 30s),
	// honouring Retry-After. RequestTimeout bounds one attempt (default 60s).
	RetryMax     int
	RetryWaitMin time.Duration
	RetryWaitMax time.Duration
	// RequestTimeout bounds one attempt, body included.
	RequestTimeout time.Duration

	// Transport, when set, replaces the default HTTP transport (proxies, custom TLS, tests).
	Transport http.RoundTripper
}

func (c Config) withDefaults() Config {
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&c.PageParam, "cursor")
	set(&c.SinceParam, "since")
	set(&c.LimitParam, "limit")
	set(&c.FromParam, "customer_from")
	set(&c.ToParam, "customer_to")
	if c.PageSize <= 0 {
		c.PageSize = 500
	}
	if c.MaxPageBytes <= 0 {
		c.MaxPageBytes = 32 << 20
	}
	if c.MaxPages <= 0 {
		c.MaxPages = 100000
	}
	if c.RetryMax == 0 {
		c.RetryMax = 4
	}
	if c.RetryMax < 0 {
		c.RetryMax = 0
	}
	if c.RetryWaitMin <= 0 {
		c.RetryWaitMin = 500 * time.Millisecond
	}
	if c.RetryWaitMax <= 0 {
		c.RetryWaitMax = 30 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = time.Minute
	}
	return c
}

// endpoints parses and checks the configured URLs.
func (c Config) endpoints() (map[string]*url.URL, error) {
	if len(c.Endpoints) == 0 {
		return nil, fmt.Errorf("%w: httpexport: no endpoints", source.ErrInvalidRequest)
	}
	out := map[string]*url.URL{}
	for class, raw := range c.Endpoints {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: httpexport: class %q: endpoint is not an absolute http(s) URL", source.ErrInvalidRequest, class)
		}
		if u.User != nil {
			return nil, fmt.Errorf("%w: httpexport: class %q: put credentials in AuthHeader/AuthEnv, not in the URL", source.ErrInvalidRequest, class)
		}
		out[class] = u
	}
	return out, nil
}

// authValue resolves the credential.
func (c Config) authValue() (string, error) {
	if c.AuthHeader == "" {
		if c.AuthEnv != "" || c.AuthValue != "" {
			return "", fmt.Errorf("%w: httpexport: AuthEnv/AuthValue without AuthHeader", source.ErrInvalidRequest)
		}
		return "", nil
	}
	if http.CanonicalHeaderKey(c.AuthHeader) == "" || strings.ContainsAny(c.AuthHeader, " :\r\n") {
		return "", fmt.Errorf("%w: httpexport: AuthHeader %q is not a header name", source.ErrInvalidRequest, c.AuthHeader)
	}
	v := c.AuthValue
	if c.AuthEnv != "" {
		v = os.Getenv(c.AuthEnv)
		if v == "" {
			return "", fmt.Errorf("%w: httpexport: environment variable %s (AuthEnv) is empty", source.ErrInvalidRequest, c.AuthEnv)
		}
	}
	if v == "" {
		return "", fmt.Errorf("%w: httpexport: AuthHeader %s has no value (set AuthEnv or AuthValue)", source.ErrInvalidRequest, c.AuthHeader)
	}
	if strings.ContainsAny(v, "\r\n") {
		return "", fmt.Errorf("%w: httpexport: the AuthHeader value contains a line break", source.ErrInvalidRequest)
	}
	return v, nil
}
