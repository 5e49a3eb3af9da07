package s3

import (
	"fmt"
	"net/url"
	"strings"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultPartSize    = 16 << 20
	DefaultConcurrency = 4
	// MinPartSize is the smallest part S3 accepts for every part but the last.
	MinPartSize = 5 << 20
	// maxParts is S3's limit of parts per multipart upload.
	maxParts = 10000
)

// Object Lock modes for Config.LockMode.
const (
	LockGovernance = "GOVERNANCE"
	LockCompliance = "COMPLIANCE"
)

// Config configures a Target. Only Bucket is required; a Provider fills Endpoint, Region and
// addressing style from its profile (see Profiles) when they are left empty.
type Config struct {
	// Name labels the target in Name() ("s3:<Name>"); the default is the bucket and prefix.
	Name string
	// Provider names a profile in Profiles ("aws", "wasabi", "b2", ...); empty means "aws" when
	// Endpoint is empty and "generic" otherwise.
	Provider string
	// Endpoint is the service URL, e.g. "https://s3.eu-central-2.wasabisys.com". Empty: the
	// provider's endpoint template, or the SDK's resolver for AWS.
	Endpoint string
	// Account fills "{account}" in endpoint templates (Cloudflare R2's account ID).
	Account string
	// Region signs requests; empty: the provider's default, then the SDK's default chain.
	Region string
	// Bucket holds the objects.
	Bucket string
	// Prefix is prepended to every object name ("custos/" stores "packs/x" as
	// "custos/packs/x"). A missing trailing slash is added.
	Prefix string
	// UsePathStyle addresses the bucket in the path instead of the host name. Providers that
	// need it set it regardless.
	UsePathStyle bool
	// PartSize is the part size of multipart uploads, used for objects larger than it
	// (default DefaultPartSize, at least MinPartSize). It is raised for objects that would
	// otherwise need more than 10,000 parts.
	PartSize int64
	// Concurrency bounds the parts of one Put in flight, and so its memory: at most
	// Concurrency × PartSize bytes are buffered (default DefaultConcurrency).
	Concurrency int
	// LockMode is the Object Lock mode applied with PutOptions.RetainUntil: LockGovernance
	// (default) or LockCompliance.
	LockMode string
	// AccessKeyID and SecretAccessKey, when set, are used as static credentials (with
	// SessionToken, if any). When empty the SDK's default chain is used: environment, shared
	// config and credentials files, web identity, container and instance roles.
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
}

// String formats c for logs with the secret and session token redacted; GoString does the
// same for %#v.
func (c Config) String() string {
	if c.SecretAccessKey != "" {
		c.SecretAccessKey = "REDACTED"
	}
	if c.SessionToken != "" {
		c.SessionToken = "REDACTED"
	}
	type plain Config // without methods, so formatting does not recurse
	return fmt.Sprintf("%+v", plain(c))
}

// GoString implements fmt.GoStringer like String.
func (c Config) GoString() string { return "s3.Config" + c.String() }

// resolved is a validated Config with its profile applied.
type resolved struct {
	Config
	profile Profile
}

func (c Config) resolve() (resolved, error) {
	if c.Bucket == "" {
		return resolved{}, fmt.Errorf("s3: config: bucket is required")
	}
	if c.Provider == "" {
		c.Provider = "aws"
		if c.Endpoint != "" {
			c.Provider = "generic"
		}
	}
	p, ok := LookupProfile(c.Provider)
	if !ok {
		return resolved{}, fmt.Errorf("s3: config: unknown provider %q (known: %s)", c.Provider, strings.Join(ProfileNames(), ", "))
	}
	if c.Region == "" {
		c.Region = p.Region
	}
	if c.Endpoint == "" && p.Endpoint != "" {
		ep, err := p.endpoint(c.Region, c.Account)
		if err != nil {
			return resolved{}, err
		}
		c.Endpoint = ep
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		switch {
		case err != nil:
			return resolved{}, fmt.Errorf("s3: config: endpoint: %w", err)
		case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
			return resolved{}, fmt.Errorf("s3: config: endpoint %q: want http(s)://host[:port]", u.Redacted())
		case u.User != nil:
			// Credentials never travel in URLs, which end up in logs and errors.
			return resolved{}, fmt.Errorf("s3: config: endpoint %q must not hold credentials", u.Redacted())
		}
	}
	c.UsePathStyle = c.UsePathStyle || p.PathStyle
	if c.Prefix != "" && !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	if strings.HasPrefix(c.Prefix, "/") || strings.Contains(c.Prefix, "//") {
		return resolved{}, fmt.Errorf("s3: config: prefix %q: no leading slash or empty segments", c.Prefix)
	}
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.PartSize < MinPartSize {
		return resolved{}, fmt.Errorf("s3: config: part size %d is below the S3 minimum of %d", c.PartSize, MinPartSize)
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	switch c.LockMode = strings.ToUpper(c.LockMode); c.LockMode {
	case "":
		c.LockMode = LockGovernance
	case LockGovernance, LockCompliance:
	default:
		return resolved{}, fmt.Errorf("s3: config: lock mode %q: want %s or %s", c.LockMode, LockGovernance, LockCompliance)
	}
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		return resolved{}, fmt.Errorf("s3: config: set both AccessKeyID and SecretAccessKey, or neither")
	}
	if c.Name == "" {
		c.Name = c.Bucket
		if c.Prefix != "" {
			c.Name += "/" + strings.TrimSuffix(c.Prefix, "/")
		}
	}
	return resolved{Config: c, profile: p}, nil
}
