package producer

import (
	"crypto/ed25519"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/event"
)

// Option configures a Producer (New).
type Option interface{ applyOption(*options) }

// PublishOption configures one publish call.
type PublishOption interface{ applyPublish(*publishOptions) }

type options struct {
	contentType    string
	now            func() time.Time
	newID          func() string
	tp             trace.TracerProvider
	limits         event.Limits
	attempts       int
	backoffBase    time.Duration
	backoffMax     time.Duration
	attemptTimeout time.Duration
	maxPending     int
	compressFrom   int
	batchMax       int
	batchLinger    time.Duration
	batchMaxBytes  int
}

// Defaults.
const (
	DefaultAttempts       = 5
	DefaultBackoffBase    = 100 * time.Millisecond
	DefaultBackoffMax     = 2 * time.Second
	DefaultAttemptTimeout = 5 * time.Second
	DefaultMaxPending     = 4000 // jetstream's default async in-flight limit
	// DefaultCompressFrom is the smallest inline record sent compressed (WithCompression).
	DefaultCompressFrom = 1 << 10
)

type publishOptions struct {
	contentType string
	subject     string
	signer      string
	signKey     ed25519.PrivateKey
}

// WithSignature signs a deletion request as signer (its requested_by) with key, for workers
// whose erasure policy lists requesters (docs/design.md section 12). Other events ignore it.
func WithSignature(signer string, key ed25519.PrivateKey) PublishOption {
	return publishOptionFunc(func(o *publishOptions) { o.signer, o.signKey = signer, key })
}

type optionFunc func(*options)

func (f optionFunc) applyOption(o *options) { f(o) }

type publishOptionFunc func(*publishOptions)

func (f publishOptionFunc) applyPublish(o *publishOptions) { f(o) }

// ContentTypeOption sets the data encoding; it is both an Option (the producer's default) and a
// PublishOption (one call).
type ContentTypeOption struct{ contentType string }

func (c ContentTypeOption) applyOption(o *options)         { o.contentType = c.contentType }
func (c ContentTypeOption) applyPublish(o *publishOptions) { o.contentType = c.contentType }

// WithContentType selects event.ContentTypeProtobuf (the default) or event.ContentTypeJSON.
func WithContentType(contentType string) ContentTypeOption {
	return ContentTypeOption{contentType: contentType}
}

// WithClock sets the clock that fills an empty meta.time; default time.Now.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(o *options) { o.now = now })
}

// WithIDGenerator sets the function that fills an empty meta.event_id; default a random UUID.
func WithIDGenerator(newID func() string) Option {
	return optionFunc(func(o *options) { o.newID = newID })
}

// WithTracerProvider sets where producer spans go; default the global TracerProvider.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(o *options) { o.tp = tp })
}

// WithLimits sets the validation limits (e.g. the policy's data classes, so an unknown class is
// refused before publishing rather than dead-lettered later). Default: event.Limits{}.
func WithLimits(l event.Limits) Option {
	return optionFunc(func(o *options) { o.limits = l })
}

// WithRetry bounds retries of transient broker errors: at most attempts tries in total (1 = no
// retry), sleeping between them an exponential backoff from base up to max, with jitter.
func WithRetry(attempts int, base, max time.Duration) Option {
	return optionFunc(func(o *options) {
		o.attempts, o.backoffBase, o.backoffMax = attempts, base, max
	})
}

// WithAttemptTimeout bounds how long one attempt waits for the stream's ack; default 5s.
func WithAttemptTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.attemptTimeout = d })
}

// WithCompression sends every inline record of at least from bytes zstd-compressed
// (record.inline_zstd) instead of as is; from <= 0 sends every record as is. The default is
// DefaultCompressFrom. Compressing here costs the producer what it saves the worker, and the
// broker stores and moves about a third of the bytes (JSON records compress 3 to 4 times).
// The message given to Publish is not changed: a copy is compressed.
func WithCompression(from int) Option {
	return optionFunc(func(o *options) { o.compressFrom = from })
}

// WithBatching sets how PublishAsync batches post-transaction events: up to maxEvents events of
// one tenant and data class leave as one PostTransactionBatch message, sent when it is full (or
// reaches half the event size limit) or linger after its first event. The broker then stores,
// delivers and acknowledges one message for many records, which is most of its cost per event
// (docs/performance.md). Each event keeps its own id, Future and producer span, and the worker
// handles it as if it had come alone. maxEvents <= 1 turns batching off. The default is
// DefaultBatchMaxEvents and DefaultBatchLinger; Publish (synchronous), other event types, events
// with a record by reference or a WithSubject option, and events too big for a batch are always
// sent alone. Workers older than the batch message dead-letter it: upgrade workers first.
func WithBatching(maxEvents int, linger time.Duration) Option {
	return optionFunc(func(o *options) { o.batchMax, o.batchLinger = maxEvents, linger })
}

// WithMaxPending bounds the async publishes in flight; PublishAsync blocks when it is reached.
// Default 4000; keep it at or below the jetstream.WithPublishAsyncMaxPending of js.
func WithMaxPending(n int) Option {
	return optionFunc(func(o *options) { o.maxPending = n })
}

// WithSubject sets the ce-subject of one event. It must not be a raw customer id: use a
// pseudonym, or leave it unset.
func WithSubject(ceSubject string) PublishOption {
	return publishOptionFunc(func(o *publishOptions) { o.subject = ceSubject })
}
