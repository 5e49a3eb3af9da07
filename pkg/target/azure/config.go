package azure

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/custos-dev/custos/pkg/target"
)

// Service limits of block blobs that Put works within.
const (
	maxBlocks    = 50_000     // committed blocks per blob
	maxBlockSize = 4000 << 20 // bytes per staged block

	// DefaultBlockSize is the block size when Config.BlockSize is zero. Objects up to this size
	// are stored with one request.
	DefaultBlockSize = 4 << 20
	// DefaultConcurrency is the number of blocks one Put stages at once (and so holds in memory)
	// when Config.Concurrency is zero.
	DefaultConcurrency = 4
)

// Config says where a Target stores objects and how it authenticates.
type Config struct {
	// Name labels the target in logs and metrics: Name() is "azure:<Name>". Default: Container.
	Name string
	// AccountURL is the blob service endpoint of the storage account, for example
	// "https://myaccount.blob.core.windows.net" or, for Azurite,
	// "http://127.0.0.1:10000/devstoreaccount1".
	AccountURL string
	// Container holds the objects. It must exist: New does not create it.
	Container string
	// Prefix is put before every object name in the container (e.g. "custos/"), so several
	// targets can share one container. It follows the rules of target.ValidatePrefix.
	Prefix string
	// BlockSize is the size of the blocks larger objects are staged in (default
	// DefaultBlockSize, at most 4000 MiB). An object larger than 50,000 blocks is staged in
	// blocks of size/50,000 instead, as the service commits at most 50,000 blocks.
	BlockSize int64
	// Concurrency is how many blocks one Put stages at once (default DefaultConcurrency). A Put
	// holds at most Concurrency blocks in memory.
	Concurrency int

	// AccountName and AccountKey, when AccountKey is set, authenticate with the account's shared
	// key. Otherwise SASToken is used if set, and otherwise azidentity's
	// DefaultAzureCredential (environment, workload identity, managed identity, Azure CLI, ...).
	AccountName, AccountKey string
	// SASToken is an account shared access signature ("sv=...&sig=...") for the blob service
	// (ss=b), resource types container and object (srt=co), with read, add, create, write,
	// delete and list permissions (sp=racwdl). A container's service SAS does not do: it cannot
	// read the container's properties, which New checks.
	SASToken string

	// UnlockedRetention sets retention (PutOptions.RetainUntil) as an Unlocked immutability
	// policy, which an account administrator can shorten or remove, instead of a Locked one,
	// which nobody can. Meant for trying retention settings out, never for production.
	UnlockedRetention bool
}

func (c *Config) setDefaults() {
	if c.Name == "" {
		c.Name = c.Container
	}
	if c.BlockSize == 0 {
		c.BlockSize = DefaultBlockSize
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
}

func (c *Config) validate() error {
	var errs []error
	u, err := url.Parse(c.AccountURL)
	switch {
	case c.AccountURL == "":
		errs = append(errs, errors.New("AccountURL is empty"))
	case err != nil:
		errs = append(errs, fmt.Errorf("AccountURL: %w", err))
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
		errs = append(errs, fmt.Errorf("AccountURL %q: want http(s)://host[/account]", c.AccountURL))
	case u.RawQuery != "":
		errs = append(errs, errors.New("AccountURL has a query: give a SAS in SASToken"))
	}
	if c.Container == "" || strings.Contains(c.Container, "/") {
		errs = append(errs, fmt.Errorf("Container %q: want a container name", c.Container))
	}
	if err := target.ValidatePrefix(c.Prefix); err != nil {
		errs = append(errs, fmt.Errorf("Prefix: %w", err))
	}
	if c.BlockSize < 1 || c.BlockSize > maxBlockSize {
		errs = append(errs, fmt.Errorf("BlockSize %d: want 1 to %d bytes", c.BlockSize, int64(maxBlockSize)))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("Concurrency %d: want at least 1", c.Concurrency))
	}
	if c.AccountKey != "" && c.AccountName == "" {
		errs = append(errs, errors.New("AccountKey without AccountName"))
	}
	return errors.Join(errs...)
}

// newHTTPClient returns the client every request of a Target goes through; the Target owns
// it, so Close can release its idle connections. Settings follow the SDK's default transport.
func newHTTPClient() (*http.Client, *http.Transport) {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Notice dead HTTP/2 connections (a service that vanished without closing them).
		HTTP2: &http.HTTP2Config{SendPingTimeout: 10 * time.Second, PingTimeout: 5 * time.Second},
	}
	return &http.Client{Transport: tr}, tr
}

// newContainerClient builds the SDK client for the configured container. The SDK's own
// retries are off: retrying is the job of the retry wrapper (pkg/target/retry).
func newContainerClient(c *Config, hc *http.Client) (*container.Client, error) {
	opts := azcore.ClientOptions{
		Transport: hc,
		Retry:     policy.RetryOptions{MaxRetries: -1},
		Telemetry: policy.TelemetryOptions{ApplicationID: "custos"},
	}
	u, err := url.Parse(c.AccountURL)
	if err != nil {
		return nil, err
	}
	u = u.JoinPath(c.Container)
	switch {
	case c.AccountKey != "":
		cred, err := container.NewSharedKeyCredential(c.AccountName, c.AccountKey)
		if err != nil {
			return nil, fmt.Errorf("shared key: %w", err)
		}
		return container.NewClientWithSharedKeyCredential(u.String(), cred, &container.ClientOptions{ClientOptions: opts})
	case c.SASToken != "":
		u.RawQuery = strings.TrimPrefix(c.SASToken, "?")
		return container.NewClientWithNoCredential(u.String(), &container.ClientOptions{ClientOptions: opts})
	default:
		cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
			ClientOptions: azcore.ClientOptions{Transport: hc},
		})
		if err != nil {
			return nil, fmt.Errorf("default Azure credential: %w", err)
		}
		return container.NewClient(u.String(), cred, &container.ClientOptions{ClientOptions: opts})
	}
}

// New checks cfg, connects and reads the container's properties once: New fails if the
// container does not exist or the credentials do not work, and learns whether the container
// supports version-level immutability, which Puts with retention or a legal hold need.
func New(ctx context.Context, cfg Config) (*Target, error) {
	hc, tr := newHTTPClient()
	t, err := newTarget(ctx, cfg, hc)
	if err != nil {
		tr.CloseIdleConnections()
		return nil, err
	}
	t.closeIdle = tr.CloseIdleConnections
	return t, nil
}

// newTarget is New with the HTTP client given; tests pass one that damages requests.
func newTarget(ctx context.Context, cfg Config, hc *http.Client) (*Target, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("azure: config: %w", err)
	}
	cc, err := newContainerClient(&cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("azure: %w", err)
	}
	t := &Target{
		cfg:       cfg,
		name:      "azure:" + cfg.Name,
		cc:        cc,
		closeIdle: func() {},
		now:       time.Now,
		pageSize:  5000,
	}
	// A missing container or refused credentials fail New; a service that does not answer
	// does not: a worker must be able to start while one target is out, and the properties
	// are read again before the first locked Put.
	if _, err := t.supportsImmutability(ctx); err != nil && errors.Is(err, target.ErrPermanent) {
		return nil, err
	}
	return t, nil
}

// supportsImmutability reads, once, whether the container has version-level immutability.
func (t *Target) supportsImmutability(ctx context.Context) (bool, error) {
	t.immMu.Lock()
	defer t.immMu.Unlock()
	if t.immKnown {
		return t.immutable, nil
	}
	props, err := t.cc.GetProperties(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("azure: container %s: %w", t.cfg.Container, classify(ctx, err))
	}
	t.immutable = props.IsImmutableStorageWithVersioningEnabled != nil && *props.IsImmutableStorageWithVersioningEnabled
	t.immKnown = true
	return t.immutable, nil
}
