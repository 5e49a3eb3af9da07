package keys

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/custos-dev/custos/pkg/broker"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// KVStore keeps wrapped data keys in a NATS KV bucket shared by every worker. The bucket keeps
// one revision per key, so writing a destroyed marker drops the wrapped key from the bucket.
//
// Unwrapped keys are cached in memory. A watcher on the bucket drops a scope from every
// instance's cache as soon as any instance destroys it; while the watcher is not running
// (after Close, or once the connection is closed) the cache is bypassed.
type KVStore struct {
	kv        jetstream.KeyValue
	kms       KMS
	now       func() time.Time
	cacheSize int

	// staleKEK is set when the bucket names another active KEK than this store's KMS (a
	// rotation this process's key file predates): it then creates no key.
	staleKEK atomic.Value // string: the bucket's active KEK id, when it differs

	mu       sync.Mutex
	cache    map[string]cacheEntry
	epoch    uint64 // counts invalidations, so a read that raced one is not cached
	watching bool
	flights  map[string]*flightCall // reads-or-creates in progress, by scope

	watcher   jetstream.KeyWatcher
	cancel    context.CancelFunc
	done      chan struct{} // closed when the watch loop ends
	closeOnce sync.Once
}

var _ Store = (*KVStore)(nil)

type cacheEntry struct {
	dek       []byte   // nil when destroyed
	env       Envelope // the wrapped form, as stored
	destroyed bool
}

// record is the KV value of a scope; []byte is standard base64 in JSON.
type record struct {
	V         int    `json:"v"`
	KMSKeyID  string `json:"kms_key_id,omitempty"`
	Wrapped   []byte `json:"wrapped,omitempty"`
	Created   string `json:"created,omitempty"`
	Destroyed string `json:"destroyed,omitempty"`
}

// NewKVStore binds to the key bucket, creating it (file storage, history 1) if needed, and
// starts watching it. ctx bounds only this setup. Close stops the watcher.
func NewKVStore(ctx context.Context, js jetstream.JetStream, kms KMS, opts ...Option) (*KVStore, error) {
	o := kvOptions{bucket: DefaultBucket, replicas: 1, cacheSize: 4096, now: time.Now}
	for _, opt := range opts {
		opt.apply(&o)
	}
	// Bind, creating only when missing: a worker's credential may not change the bucket.
	kv, err := broker.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      o.bucket,
		Description: "Custos data keys, wrapped by the KMS",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    o.replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("keys: open bucket %s: %w", o.bucket, err)
	}
	status, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("keys: bucket %s status: %w", o.bucket, err)
	}
	if h := status.History(); h != 1 {
		return nil, fmt.Errorf("%w: %s keeps %d revisions, crypto-shredding needs 1", ErrBucketConfig, o.bucket, h)
	}

	// A key file that does not hold the recorded active KEK predates the last rotation (or is
	// foreign); one that holds it as a retired version is newer, which is the rotation itself.
	if e, err := kv.Get(ctx, ActiveKEKKey); err == nil && !Holds(kms, string(e.Value())) {
		return nil, fmt.Errorf("%w: the key store's active KEK is %s, this key file's is %s: start with the current key file",
			ErrStaleKEK, e.Value(), kms.KeyID())
	} else if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("keys: bucket %s: %w", o.bucket, err)
	}
	// The watcher outlives ctx, so it gets its own context, cancelled by Close.
	wctx, cancel := context.WithCancel(context.Background())
	w, err := kv.WatchAll(wctx, jetstream.UpdatesOnly())
	if err != nil {
		cancel()
		return nil, fmt.Errorf("keys: watch bucket %s: %w", o.bucket, err)
	}
	s := &KVStore{
		kv: kv, kms: kms, now: o.now, cacheSize: o.cacheSize,
		cache: make(map[string]cacheEntry), watching: true,
		watcher: w, cancel: cancel, done: make(chan struct{}),
	}
	go s.watch()
	return s, nil
}

// Close stops the watcher and drops cached keys. The store still answers afterwards, reading
// the bucket on every call. Close is safe to call more than once.
func (s *KVStore) Close() error {
	s.closeOnce.Do(func() {
		_ = s.watcher.Stop()
		s.cancel()
		<-s.done
	})
	return nil
}

func (s *KVStore) watch() {
	defer close(s.done)
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.watching = false
		for scope, e := range s.cache {
			clear(e.dek)
			delete(s.cache, scope)
		}
	}()
	for e := range s.watcher.Updates() {
		if e == nil {
			continue
		}
		if e.Key() == ActiveKEKKey {
			if v := string(e.Value()); e.Operation() == jetstream.KeyValuePut && !Holds(s.kms, v) {
				s.staleKEK.Store(v)
			} else {
				s.staleKEK.Store("")
			}
			continue
		}
		switch e.Operation() {
		case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
			s.invalidate(e.Key(), false)
		case jetstream.KeyValuePut:
			// Creations need nothing: a cached key can only differ after a delete or purge.
			var r record
			if json.Unmarshal(e.Value(), &r) != nil || r.Destroyed != "" || r.Wrapped == nil {
				s.invalidate(e.Key(), r.Destroyed != "")
			} else if c, _, ok := s.cached(e.Key()); ok && !bytes.Equal(c.env.DEK, r.Wrapped) {
				s.invalidate(e.Key(), false) // re-wrapped by a rotation: the envelope changed
			}
		}
	}
}

// invalidate drops a scope's cached key, remembering it as destroyed if so.
func (s *KVStore) invalidate(scope string, destroyed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	if e, ok := s.cache[scope]; ok {
		clear(e.dek)
		delete(s.cache, scope)
	}
	if destroyed && s.watching {
		s.put(scope, cacheEntry{destroyed: true})
	}
}

// cached returns the cached entry and the invalidation epoch to pass to remember.
func (s *KVStore) cached(scope string) (cacheEntry, uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.cache[scope]
	return e, s.epoch, ok && s.watching
}

// remember caches what was read from the bucket, unless an invalidation arrived since epoch
// was taken: the read may predate a destroy.
func (s *KVStore) remember(scope string, e cacheEntry, epoch uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watching && epoch == s.epoch {
		s.put(scope, e)
	}
}

// put stores an entry, evicting an arbitrary one when full; s.mu must be held.
func (s *KVStore) put(scope string, e cacheEntry) {
	if s.cacheSize <= 0 {
		return
	}
	if old, ok := s.cache[scope]; ok {
		clear(old.dek)
	} else if len(s.cache) >= s.cacheSize {
		for k, v := range s.cache {
			clear(v.dek)
			delete(s.cache, k)
			break
		}
	}
	if e.dek != nil {
		e.dek = bytes.Clone(e.dek)
	}
	s.cache[scope] = e
}

// DataKey returns the scope's key, creating it on first use. Concurrent creators race with a
// create-only write; the losers read and use the winner's key.
func (s *KVStore) DataKey(ctx context.Context, scope string) ([]byte, error) {
	if err := ValidateScope(scope); err != nil {
		return nil, err
	}
	if e, _, ok := s.cached(scope); ok {
		return e.key()
	}
	// Concurrent callers for one uncached scope (a new customer's first events, decoded in
	// parallel) share one read-or-create instead of racing each other through the bucket.
	return s.flight(ctx, scope)
}

// flightCall is one read-or-create of a scope's key that concurrent DataKey calls wait on.
type flightCall struct {
	done chan struct{}
	dek  []byte
	err  error
}

func (s *KVStore) flight(ctx context.Context, scope string) ([]byte, error) {
	s.mu.Lock()
	if s.flights == nil {
		s.flights = map[string]*flightCall{}
	}
	if c, ok := s.flights[scope]; ok {
		s.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if c.err != nil && ctx.Err() == nil && (errors.Is(c.err, context.Canceled) || errors.Is(c.err, context.DeadlineExceeded)) {
			return s.flight(ctx, scope) // the leader's context ended, not ours: try again
		}
		if c.err != nil {
			return nil, c.err
		}
		return bytes.Clone(c.dek), nil
	}
	c := &flightCall{done: make(chan struct{})}
	s.flights[scope] = c
	s.mu.Unlock()
	c.dek, c.err = s.readOrCreate(ctx, scope)
	s.mu.Lock()
	delete(s.flights, scope)
	s.mu.Unlock()
	close(c.done)
	if c.err != nil {
		return nil, c.err
	}
	return bytes.Clone(c.dek), nil
}

// readOrCreate reads the scope's key from the bucket, creating it when missing.
func (s *KVStore) readOrCreate(ctx context.Context, scope string) ([]byte, error) {
	for range 3 {
		dek, err := s.load(ctx, scope)
		if !errors.Is(err, ErrNotFound) {
			return dek, err
		}
		dek, err = s.create(ctx, scope)
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return dek, err
		}
	}
	return nil, fmt.Errorf("keys: data key of %s: creation kept conflicting", scope)
}

// Lookup returns an existing key without creating one.
func (s *KVStore) Lookup(ctx context.Context, scope string) ([]byte, error) {
	if err := ValidateScope(scope); err != nil {
		return nil, err
	}
	if e, _, ok := s.cached(scope); ok {
		return e.key()
	}
	return s.load(ctx, scope)
}

// Destroy replaces the wrapped key by a destroyed marker. Destroying twice keeps the first
// marker and its time.
func (s *KVStore) Destroy(ctx context.Context, scope string) error {
	if err := ValidateScope(scope); err != nil {
		return err
	}
	if e, _, ok := s.cached(scope); ok && e.destroyed {
		return nil
	}
	// A record that cannot be read or unwrapped is destroyed all the same.
	if r, err := s.read(ctx, scope); err == nil && r.Destroyed != "" {
		return nil
	}
	// Put, not a conditional update: the marker must win over any concurrent creation, which
	// then fails its create-only write and reads the marker.
	val, err := json.Marshal(record{V: 1, Destroyed: s.timestamp()})
	if err != nil {
		return fmt.Errorf("keys: encode destroyed marker: %w", err)
	}
	if _, err := s.kv.Put(ctx, scope, val); err != nil {
		return fmt.Errorf("keys: destroy data key of %s: %w", scope, err)
	}
	s.invalidate(scope, true)
	return nil
}

// read returns the scope's record.
func (s *KVStore) read(ctx context.Context, scope string) (record, error) {
	var r record
	entry, err := s.kv.Get(ctx, scope)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("keys: read data key of %s: %w", scope, err)
	}
	if err := json.Unmarshal(entry.Value(), &r); err != nil || r.V != 1 {
		return r, fmt.Errorf("%w: %s", ErrCorrupt, scope)
	}
	return r, nil
}

// load reads, unwraps and caches the scope's key.
func (s *KVStore) load(ctx context.Context, scope string) ([]byte, error) {
	_, epoch, _ := s.cached(scope)
	r, err := s.read(ctx, scope)
	if err != nil {
		return nil, err
	}
	if r.Destroyed != "" {
		s.remember(scope, cacheEntry{destroyed: true}, epoch)
		return nil, ErrDestroyed
	}
	env := Envelope{KEK: r.KMSKeyID, DEK: r.Wrapped}
	dek, err := env.Open(ctx, s.kms, scope)
	if err != nil {
		return nil, err
	}
	s.remember(scope, cacheEntry{dek: dek, env: env}, epoch)
	return dek, nil
}

// create makes, wraps and stores a new key with a create-only write; it returns
// jetstream.ErrKeyExists when another creator (or a destroy) got there first.
func (s *KVStore) create(ctx context.Context, scope string) ([]byte, error) {
	if v, _ := s.staleKEK.Load().(string); v != "" {
		return nil, fmt.Errorf("%w: the key store's active KEK is %s, this key file's is %s: restart with the current key file",
			ErrStaleKEK, v, s.kms.KeyID())
	}
	_, epoch, _ := s.cached(scope)
	dek := make([]byte, DEKSize)
	if _, err := rand.Read(dek); err != nil {
		return nil, fmt.Errorf("keys: generate data key: %w", err)
	}
	wrapped, err := s.kms.Wrap(ctx, dek, []byte(scope))
	if err != nil {
		return nil, fmt.Errorf("keys: wrap data key of %s: %w", scope, err)
	}
	val, err := json.Marshal(record{V: 1, KMSKeyID: s.kms.KeyID(), Wrapped: wrapped, Created: s.timestamp()})
	if err != nil {
		return nil, fmt.Errorf("keys: encode data key record: %w", err)
	}
	if _, err := s.kv.Create(ctx, scope, val); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil, jetstream.ErrKeyExists
		}
		return nil, fmt.Errorf("keys: store data key of %s: %w", scope, err)
	}
	s.remember(scope, cacheEntry{dek: dek, env: Envelope{KEK: s.kms.KeyID(), DEK: wrapped}}, epoch)
	return dek, nil
}

func (s *KVStore) timestamp() string { return s.now().UTC().Format(time.RFC3339) }

func (e cacheEntry) key() ([]byte, error) {
	if e.destroyed {
		return nil, ErrDestroyed
	}
	return bytes.Clone(e.dek), nil
}
