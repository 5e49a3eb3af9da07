package repository

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/target"
)

// MaxCatalogObject bounds a catalog object read back (a manifest of a large pack, a task
// manifest of a large range).
const MaxCatalogObject = 1 << 30

// Bad names one replica that failed a check, for reports: which target, which object, why.
type Bad struct {
	Target string
	Object string
	Err    error
}

func (b Bad) String() string { return fmt.Sprintf("%s: %s: %v", b.Target, b.Object, b.Err) }

// Reader reads the record from targets, trying them in order. It never writes.
type Reader struct {
	Targets []target.Reader
	Opener  *Opener

	mu  sync.Mutex
	bad []Bad
}

// NewReader returns a Reader over targets.
func NewReader(o *Opener, targets ...target.Reader) *Reader {
	return &Reader{Targets: targets, Opener: o}
}

// Skipped returns the replicas that failed a check and were passed over, in the order met.
func (r *Reader) Skipped() []Bad {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Bad(nil), r.bad...)
}

// isKeyError reports whether err says the reader's key file is not the one the object was
// written with: another pseudonym key, or another KEK.
func isKeyError(err error) bool {
	return errors.Is(err, ErrKeyMismatch) || errors.Is(err, keys.ErrUnwrap)
}

// TakeSkipped returns the replicas passed over since the last call and forgets them, so that one
// report never repeats another's.
func (r *Reader) TakeSkipped() []Bad {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.bad
	r.bad = nil
	return out
}

// Skip records a replica passed over by a caller that reads items itself (restore).
func (r *Reader) Skip(t, obj string, err error) { r.skip(t, obj, err) }

func (r *Reader) skip(t, obj string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bad = append(r.bad, Bad{Target: t, Object: obj, Err: err})
}

// ReadAll reads a whole object of at most limit bytes.
func ReadAll(ctx context.Context, t target.Reader, name string, limit int64) ([]byte, error) {
	rc, err := t.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrCorrupt, name, limit)
	}
	return b, nil
}

// first opens an object from the first target whose copy passes open. A key mismatch stops at
// once: every other copy would say the same.
func first[T any](ctx context.Context, r *Reader, name string, open func([]byte) (T, error)) (T, error) {
	var zero T
	var errs []error
	var keyErr error // the header is not authenticated: one copy's mismatch is not the verdict
	for _, t := range r.Targets {
		b, err := ReadAll(ctx, t, name, MaxCatalogObject)
		if err == nil {
			var v T
			if v, err = open(b); err == nil {
				return v, nil
			}
			if isKeyError(err) {
				keyErr = fmt.Errorf("%s: %w", t.Name(), err)
			}
			r.skip(t.Name(), name, err)
		}
		errs = append(errs, fmt.Errorf("%s: %w", t.Name(), err))
	}
	if keyErr != nil { // no copy opened, and one says the key file is not the writer's
		return zero, fmt.Errorf("%s: %w", name, keyErr)
	}
	if len(errs) == 0 {
		return zero, fmt.Errorf("%s: %w", name, ErrUnavailable)
	}
	return zero, fmt.Errorf("%s: %w", name, errors.Join(errs...))
}

// Manifest reads and authenticates the manifest of pack id.
func (r *Reader) Manifest(ctx context.Context, id string) (pack.Manifest, error) {
	if !pack.ValidID(id) {
		return pack.Manifest{}, fmt.Errorf("%w: pack id %q", ErrCorrupt, id)
	}
	return first(ctx, r, ManifestName(id), func(b []byte) (pack.Manifest, error) {
		return r.Opener.Manifest(ctx, id, b)
	})
}

// TaskManifest reads a snapshot task manifest, checking it against the task's result.
func (r *Reader) TaskManifest(ctx context.Context, job string, t snapshot.TaskResult) (snapshot.Manifest, error) {
	name := t.Manifest.Name
	if name == "" {
		name = TaskManifestName(job, t.Task, "")
	}
	return first(ctx, r, name, func(b []byte) (snapshot.Manifest, error) {
		if t.Manifest.SHA256 != "" && (int64(len(b)) != t.Manifest.Size || hexSum(b) != t.Manifest.SHA256) {
			return snapshot.Manifest{}, fmt.Errorf("%w: checksum of %s", ErrCorrupt, name)
		}
		return r.Opener.TaskManifest(ctx, job, t.Task, b)
	})
}

// CustomerKey finds a customer's data key in the manifest of a pack that holds its items: the
// path a restore takes when the key store lacks the key.
func (r *Reader) CustomerKey(ctx context.Context, packID, pseudonym string) ([]byte, error) {
	m, err := r.Manifest(ctx, packID)
	if err != nil {
		return nil, err
	}
	k, ok := m.Keys[pseudonym]
	if !ok {
		return nil, fmt.Errorf("manifest %s holds no data key of %s: %w", packID, pseudonym, keys.ErrNotFound)
	}
	return r.Opener.OpenKey(ctx, pseudonym, keys.Envelope{KEK: k.KEK, DEK: k.DEK})
}

// Erased reports whether any target holds an authenticated erasure record of the customer. It
// returns an error only when no target answered and none confirmed the erasure.
func (r *Reader) Erased(ctx context.Context, pseudonym string) (bool, error) {
	if !ValidPseudonym(pseudonym) {
		return false, fmt.Errorf("%w: pseudonym %q", ErrCorrupt, pseudonym)
	}
	name := ErasureName(pseudonym)
	answered := false
	var errs []error
	var keyErr error
	for _, t := range r.Targets {
		b, err := ReadAll(ctx, t, name, maxHeader+4096)
		if errors.Is(err, target.ErrNotFound) {
			answered = true
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.Name(), err))
			continue
		}
		answered = true
		if _, err := r.Opener.Erasure(ctx, pseudonym, b); err != nil {
			if isKeyError(err) {
				keyErr = fmt.Errorf("%s: %w", t.Name(), err)
			}
			r.skip(t.Name(), name, err)
			continue
		}
		return true, nil
	}
	if keyErr != nil {
		return false, fmt.Errorf("erasure record of %s: %w", pseudonym, keyErr)
	}
	if !answered {
		return false, fmt.Errorf("erasure record of %s: %w: %w", pseudonym, ErrUnavailable, errors.Join(errs...))
	}
	return false, nil
}

// errFound stops a listing at its first object.
var errFound = errors.New("found")

// CheckKey reads one catalog object (a pack manifest, else an erasure record) from the first
// target that answers and checks that it was written with the reader's key file. It returns
// ErrKeyMismatch for another key file, and nil when the targets hold no catalog object yet. A
// damaged object says nothing about the key file: the next one listed is read instead.
func (r *Reader) CheckKey(ctx context.Context) error {
	var errs []error
	for _, t := range r.Targets {
		for _, prefix := range []string{ManifestPrefix, ErasurePrefix} {
			var checked bool
			var keyErr, damaged error
			err := t.List(ctx, prefix, func(in target.Info) error {
				b, err := ReadAll(ctx, t, in.Name, MaxCatalogObject)
				if err != nil {
					return err
				}
				if _, err := r.Opener.CatalogEnvelope(ctx, b); err != nil {
					if errors.Is(err, ErrKeyMismatch) || errors.Is(err, keys.ErrUnwrap) {
						keyErr = err
						return errFound
					}
					damaged = fmt.Errorf("%s: %w", in.Name, err)
					return nil
				}
				checked = true
				return errFound
			})
			if keyErr != nil {
				return fmt.Errorf("%s: %w", t.Name(), keyErr)
			}
			if checked {
				return nil
			}
			if err != nil && !errors.Is(err, errFound) {
				errs = append(errs, fmt.Errorf("%s: %w", t.Name(), err))
				break
			}
			if damaged != nil {
				errs = append(errs, fmt.Errorf("%s: %w", t.Name(), damaged))
				break
			}
		}
	}
	if len(errs) == len(r.Targets) && len(errs) > 0 {
		return fmt.Errorf("check the key file against the targets: %w", errors.Join(errs...))
	}
	return nil
}
