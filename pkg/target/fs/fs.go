// Package fs is a storage target on a local (or mounted off-site) filesystem.
//
// Layout under the root: each object is a regular file at its name (slashes are directories);
// ".tmp/" holds staging files of Puts in flight. Names whose first segment starts with "." are
// reserved for the target and rejected with target.ErrInvalidName.
//
// Put writes a temp file in .tmp (same filesystem), verifies size and SHA-256 while writing,
// fsyncs it, publishes it with link(2), which fails if the name exists, so concurrent Puts of
// one name cannot overwrite each other, then fsyncs the directory. Retention and legal hold are
// extended attributes set on the temp file before it is linked, so an object is never visible
// without its lock; Delete refuses locked objects. This guards against mistakes, not against
// anyone with write access to the directory: a filesystem cannot provide object lock.
package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/custos-dev/custos/pkg/target"
)

var _ target.Target = (*Target)(nil)

const tmpDir = ".tmp"

// Target stores objects as files under a root directory. It is safe for concurrent use, also
// by several processes sharing the root.
type Target struct {
	root, tmp string
	name      string
	now       func() time.Time
	// dirs holds the directories this target created or found, so that a put into an existing
	// directory costs no mkdir calls (two per object otherwise). Objects are deleted but never
	// their directories; if one is removed from outside, the link fails and put forgets it.
	dirs sync.Map
}

// Option configures a Target.
type Option interface{ apply(*Target) }

type optionFunc func(*Target)

func (f optionFunc) apply(t *Target) { f(t) }

// WithLabel sets the label in Name ("fs:<label>"); the default is the base name of the root.
func WithLabel(label string) Option { return optionFunc(func(t *Target) { t.name = "fs:" + label }) }

// WithClock sets the clock used to decide whether retention has expired.
func WithClock(now func() time.Time) Option { return optionFunc(func(t *Target) { t.now = now }) }

// New opens the target rooted at root, creating root and its .tmp directory (0700) if needed.
func New(root string, opts ...Option) (*Target, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("fs: root %s: %w", root, err)
	}
	t := &Target{root: root, tmp: filepath.Join(root, tmpDir), name: "fs:" + filepath.Base(root), now: time.Now}
	for _, o := range opts {
		o.apply(t)
	}
	if err := os.MkdirAll(t.tmp, 0o700); err != nil {
		return nil, fmt.Errorf("fs: root %s: %w", root, err)
	}
	return t, nil
}

// Name implements target.Reader.
func (t *Target) Name() string { return t.name }

// Kind implements target.Target.
func (t *Target) Kind() string { return "fs" }

// Close implements target.Target. The target holds no resources.
func (t *Target) Close() error { return nil }

// Put implements target.Writer.
func (t *Target) Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	if err := t.put(ctx, name, r, size, opts); err != nil {
		return fmt.Errorf("fs: put %s: %w", name, err)
	}
	return nil
}

func (t *Target) put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	if err := t.check(ctx, name); err != nil {
		return err
	}
	dst := t.path(name)
	if fi, err := os.Lstat(dst); err == nil {
		if fi.IsDir() {
			return conflict(name)
		}
		return target.ErrExists // fail fast, before reading r
	}
	f, err := os.CreateTemp(t.tmp, "put-*") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the link the object lives on under dst
	err = target.CopyVerified(ctx, f, r, size, opts.SHA256)
	if err == nil {
		err = setLock(f, opts)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil { // cancelled after the last read: publish nothing
		return err
	}
	dir := filepath.Dir(dst)
	if err := t.mkdirs(dir); err != nil {
		return err
	}
	err = os.Link(f.Name(), dst)
	if errors.Is(err, iofs.ErrNotExist) {
		t.dirs.Clear() // a directory was removed from outside: create it again
		if err = t.mkdirs(dir); err != nil {
			return err
		}
		err = os.Link(f.Name(), dst)
	}
	if err != nil {
		switch {
		case errors.Is(err, iofs.ErrExist):
			if fi, serr := os.Lstat(dst); serr == nil && fi.IsDir() {
				return conflict(name)
			}
			return target.ErrExists
		case errors.Is(err, syscall.ENOTDIR):
			return conflict(name)
		}
		return err
	}
	return syncDir(dir)
}

// conflict reports a name that cannot exist on a filesystem because it is, or lies below,
// another object's path ("a" and "a/b"). Object stores allow that; Custos names never do it.
func conflict(name string) error {
	return fmt.Errorf("%w: %s conflicts with another object's path", target.ErrPermanent, name)
}

// mkdirs creates dir and its missing parents below the root, fsyncing each parent that got a
// new entry so the path survives a crash.
func (t *Target) mkdirs(dir string) (err error) {
	if _, ok := t.dirs.Load(dir); ok {
		return nil
	}
	rel, err := filepath.Rel(t.root, dir)
	if err != nil || rel == "." {
		return err
	}
	defer func() {
		if err == nil {
			t.dirs.Store(dir, struct{}{})
		}
	}()
	p := t.root
	for seg := range strings.SplitSeq(rel, string(filepath.Separator)) {
		parent := p
		p = filepath.Join(p, seg)
		switch err := os.Mkdir(p, 0o700); {
		case err == nil:
			if err := syncDir(parent); err != nil {
				return err
			}
		case errors.Is(err, iofs.ErrExist):
		case errors.Is(err, syscall.ENOTDIR):
			return conflict(filepath.ToSlash(rel))
		default:
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Get implements target.Reader.
func (t *Target) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return t.GetRange(ctx, name, 0, -1)
}

// GetRange implements target.Reader.
func (t *Target) GetRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := t.check(ctx, name); err != nil {
		return nil, fmt.Errorf("fs: get %s: %w", name, err)
	}
	f, err := os.Open(t.path(name))
	if err != nil {
		return nil, fmt.Errorf("fs: get %s: %w", name, notFound(err))
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
	case !fi.Mode().IsRegular():
		err = target.ErrNotFound
	case offset < 0 || offset > fi.Size():
		err = fmt.Errorf("offset %d, size %d: %w", offset, fi.Size(), target.ErrInvalidRange)
	default:
		_, err = f.Seek(offset, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("fs: get %s: %w", name, err)
	}
	if length < 0 {
		return f, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, length), f}, nil
}

// Stat implements target.Reader. SHA256 is not reported (zero): it would need a full read.
func (t *Target) Stat(ctx context.Context, name string) (target.Info, error) {
	if err := t.check(ctx, name); err != nil {
		return target.Info{}, fmt.Errorf("fs: stat %s: %w", name, err)
	}
	fi, err := os.Lstat(t.path(name))
	if err == nil && !fi.Mode().IsRegular() {
		err = target.ErrNotFound
	}
	if err != nil {
		return target.Info{}, fmt.Errorf("fs: stat %s: %w", name, notFound(err))
	}
	return target.Info{Name: name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List implements target.Reader. Directories are read one at a time and their entries sorted
// as full names (a directory "a" sorts as "a/"), so objects come out in lexical order without
// holding the whole listing in memory. Temp files and stray files with invalid names are
// skipped. fn's error is returned as is.
func (t *Target) List(ctx context.Context, prefix string, fn func(target.Info) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fs: list %s: %w", prefix, err)
	}
	if err := target.ValidatePrefix(prefix); err != nil {
		return fmt.Errorf("fs: list: %w", err)
	}
	dir := "" // start at the deepest directory the prefix names
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dir = prefix[:i]
	}
	return t.walk(ctx, dir, prefix, fn)
}

func (t *Target) walk(ctx context.Context, dir, prefix string, fn func(target.Info) error) error {
	entries, err := os.ReadDir(t.path(dir))
	if errors.Is(err, iofs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fs: list %s: %w", prefix, err)
	}
	type entry struct {
		key string // full name, with "/" appended for a directory
		e   iofs.DirEntry
	}
	var todo []entry
	for _, e := range entries {
		name := path(dir, e.Name())
		key := name
		if e.IsDir() {
			key += "/"
		}
		switch {
		case name[0] == '.', target.ValidateName(name) != nil: // reserved or stray
		case strings.HasPrefix(key, prefix), e.IsDir() && strings.HasPrefix(prefix, key):
			todo = append(todo, entry{key, e})
		}
	}
	slices.SortFunc(todo, func(a, b entry) int { return strings.Compare(a.key, b.key) })
	for _, en := range todo {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("fs: list %s: %w", prefix, err)
		}
		name := strings.TrimSuffix(en.key, "/")
		if en.e.IsDir() {
			if err := t.walk(ctx, name, prefix, fn); err != nil {
				return err
			}
			continue
		}
		if !en.e.Type().IsRegular() {
			continue
		}
		fi, err := en.e.Info()
		if errors.Is(err, iofs.ErrNotExist) { // deleted since ReadDir
			continue
		}
		if err != nil {
			return fmt.Errorf("fs: list %s: %w", prefix, err)
		}
		if err := fn(target.Info{Name: name, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}

func path(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// Delete implements target.Writer. Empty directories are kept: removing them would race with
// a concurrent Put creating an object below them.
func (t *Target) Delete(ctx context.Context, name string) error {
	if err := t.delete(ctx, name); err != nil {
		return fmt.Errorf("fs: delete %s: %w", name, err)
	}
	return nil
}

func (t *Target) delete(ctx context.Context, name string) error {
	if err := t.check(ctx, name); err != nil {
		return err
	}
	p := t.path(name)
	fi, err := os.Lstat(p)
	if err != nil {
		return notFound(err)
	}
	if !fi.Mode().IsRegular() {
		return target.ErrNotFound
	}
	until, hold, err := getLock(p)
	if err != nil {
		return err
	}
	if hold || t.now().Before(until) {
		return target.ErrLocked
	}
	if err := os.Remove(p); err != nil {
		return notFound(err)
	}
	return syncDir(filepath.Dir(p))
}

// CleanTemp removes staging files left in .tmp by Puts that crashed, if they were last
// modified more than olderThan ago; pick olderThan well above the longest Put. It returns how
// many files it removed.
func (t *Target) CleanTemp(olderThan time.Duration) (int, error) {
	entries, err := os.ReadDir(t.tmp)
	if err != nil {
		return 0, fmt.Errorf("fs: clean temp: %w", err)
	}
	n, cutoff := 0, t.now().Add(-olderThan)
	var errs []error
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.ModTime().Before(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(t.tmp, e.Name())); err != nil && !errors.Is(err, iofs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("fs: clean temp: %w", err)
	}
	return n, nil
}

func (t *Target) check(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := target.ValidateName(name); err != nil {
		return err
	}
	if name[0] == '.' {
		return fmt.Errorf("%w: %q is reserved on fs targets", target.ErrInvalidName, name)
	}
	return nil
}

func (t *Target) path(name string) string { return filepath.Join(t.root, filepath.FromSlash(name)) }

// notFound maps "no such file" (also a path through a regular file) to target.ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, iofs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return target.ErrNotFound
	}
	return err
}
