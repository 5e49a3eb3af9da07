// Package mem is an in-memory storage target for tests and benchmarks. It keeps the full
// target contract (create-only atomic Put with checksum verification, retention locks, lexical
// List), so code tested against it behaves the same against a real target.
package mem

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/custos-dev/custos/pkg/target"
)

var _ target.Target = (*Target)(nil)

type object struct {
	data        []byte
	info        target.Info
	retainUntil time.Time
	legalHold   bool
}

// Target holds objects in a map. It is safe for concurrent use.
type Target struct {
	name string
	now  func() time.Time

	mu      sync.RWMutex
	objects map[string]*object
}

// Option configures a Target.
type Option interface{ apply(*Target) }

type optionFunc func(*Target)

func (f optionFunc) apply(t *Target) { f(t) }

// WithLabel sets the label in Name ("mem:<label>"); the default label is "default".
func WithLabel(label string) Option { return optionFunc(func(t *Target) { t.name = "mem:" + label }) }

// WithClock sets the clock used for ModTime and retention checks.
func WithClock(now func() time.Time) Option { return optionFunc(func(t *Target) { t.now = now }) }

// New returns an empty in-memory target.
func New(opts ...Option) *Target {
	t := &Target{name: "mem:default", now: time.Now, objects: map[string]*object{}}
	for _, o := range opts {
		o.apply(t)
	}
	return t
}

// Name implements target.Reader.
func (t *Target) Name() string { return t.name }

// Kind implements target.Target.
func (t *Target) Kind() string { return "mem" }

// Close implements target.Target; objects stay readable.
func (t *Target) Close() error { return nil }

// Put implements target.Writer. The object is staged in a private buffer and published under
// the lock only after verification, so no reader ever sees it partially.
func (t *Target) Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	if err := check(ctx, name); err != nil {
		return fmt.Errorf("mem: put %s: %w", name, err)
	}
	if _, err := t.lookup(name); err == nil {
		return fmt.Errorf("mem: put %s: %w", name, target.ErrExists)
	}
	var buf bytes.Buffer
	buf.Grow(int(min(max(size, 0), 64<<20)))
	if err := target.CopyVerified(ctx, &buf, r, size, opts.SHA256); err != nil {
		return fmt.Errorf("mem: put %s: %w", name, err)
	}
	if err := ctx.Err(); err != nil { // cancelled after the last read: publish nothing
		return fmt.Errorf("mem: put %s: %w", name, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.objects[name]; ok {
		return fmt.Errorf("mem: put %s: %w", name, target.ErrExists)
	}
	t.objects[name] = &object{
		data:        buf.Bytes(),
		info:        target.Info{Name: name, Size: int64(buf.Len()), SHA256: sha256.Sum256(buf.Bytes()), ModTime: t.now()},
		retainUntil: opts.RetainUntil,
		legalHold:   opts.LegalHold,
	}
	return nil
}

// Get implements target.Reader.
func (t *Target) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return t.GetRange(ctx, name, 0, -1)
}

// GetRange implements target.Reader.
func (t *Target) GetRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := check(ctx, name); err != nil {
		return nil, fmt.Errorf("mem: get %s: %w", name, err)
	}
	o, err := t.lookup(name)
	if err != nil {
		return nil, fmt.Errorf("mem: get %s: %w", name, err)
	}
	size := int64(len(o.data))
	if offset < 0 || offset > size {
		return nil, fmt.Errorf("mem: get %s at %d (size %d): %w", name, offset, size, target.ErrInvalidRange)
	}
	end := size
	if length >= 0 {
		end = min(size, offset+length)
	}
	// Stored data is never mutated, so the slice can be shared with the reader.
	return io.NopCloser(bytes.NewReader(o.data[offset:end])), nil
}

// Stat implements target.Reader; SHA256 is always reported.
func (t *Target) Stat(ctx context.Context, name string) (target.Info, error) {
	if err := check(ctx, name); err != nil {
		return target.Info{}, fmt.Errorf("mem: stat %s: %w", name, err)
	}
	o, err := t.lookup(name)
	if err != nil {
		return target.Info{}, fmt.Errorf("mem: stat %s: %w", name, err)
	}
	return o.info, nil
}

// List implements target.Reader. It walks a snapshot taken when called and runs fn without
// holding the lock, so fn may call back into the target.
func (t *Target) List(ctx context.Context, prefix string, fn func(target.Info) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mem: list %s: %w", prefix, err)
	}
	if err := target.ValidatePrefix(prefix); err != nil {
		return fmt.Errorf("mem: list: %w", err)
	}
	t.mu.RLock()
	var infos []target.Info
	for name, o := range t.objects {
		if strings.HasPrefix(name, prefix) {
			infos = append(infos, o.info)
		}
	}
	t.mu.RUnlock()
	slices.SortFunc(infos, func(a, b target.Info) int { return strings.Compare(a.Name, b.Name) })
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("mem: list %s: %w", prefix, err)
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements target.Writer, refusing objects under retention or legal hold.
func (t *Target) Delete(ctx context.Context, name string) error {
	if err := check(ctx, name); err != nil {
		return fmt.Errorf("mem: delete %s: %w", name, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	o, ok := t.objects[name]
	switch {
	case !ok:
		return fmt.Errorf("mem: delete %s: %w", name, target.ErrNotFound)
	case o.legalHold || t.now().Before(o.retainUntil):
		return fmt.Errorf("mem: delete %s: %w", name, target.ErrLocked)
	}
	delete(t.objects, name)
	return nil
}

func (t *Target) lookup(name string) (*object, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if o, ok := t.objects[name]; ok {
		return o, nil
	}
	return nil, target.ErrNotFound
}

func check(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return target.ValidateName(name)
}
