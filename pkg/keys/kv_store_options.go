package keys

import "time"

// DefaultBucket is the NATS KV bucket of wrapped data keys.
const DefaultBucket = "CUSTOS_KEYS"

// Option configures a KVStore.
type Option interface{ apply(*kvOptions) }

type kvOptions struct {
	bucket    string
	replicas  int
	cacheSize int
	now       func() time.Time
}

type optionFunc func(*kvOptions)

func (f optionFunc) apply(o *kvOptions) { f(o) }

// WithBucket sets the KV bucket name (default DefaultBucket).
func WithBucket(name string) Option { return optionFunc(func(o *kvOptions) { o.bucket = name }) }

// WithReplicas sets the bucket's replica count when the store creates it (default 1).
func WithReplicas(n int) Option { return optionFunc(func(o *kvOptions) { o.replicas = n }) }

// WithCacheSize bounds the number of unwrapped keys held in memory (default 4096; 0 disables
// the cache, so every call reads the bucket and asks the KMS).
func WithCacheSize(n int) Option { return optionFunc(func(o *kvOptions) { o.cacheSize = n }) }

// WithClock sets the clock of the created and destroyed timestamps (default time.Now).
func WithClock(now func() time.Time) Option {
	return optionFunc(func(o *kvOptions) { o.now = now })
}
