// Package rclone is a storage target on the remotes that rclone's backends reach, used as a Go
// library: SFTP servers, WebDAV servers, Dropbox, Box, Google Drive, pCloud and Backblaze B2 (and
// rclone's local backend, for tests). It is a module of its own so that only the programs that
// import it (the worker and the admin CLI) link rclone; importing it registers the kind "rclone"
// with pkg/target/registry, which pkg/config opens targets of.
//
// None of these remotes can lock an object: a Put that asks for retention or a legal hold fails
// with a permanent error and stores nothing, and the policy never counts an rclone target toward
// a class's immutable copies. docs/targets/rclone.md says, per backend, what else it cannot do.
//
// Layout under the root: each object is a file at its name (slashes are directories); ".tmp/"
// holds the staging files of Puts in flight. Names whose first segment starts with "." are
// reserved for the target and rejected with target.ErrInvalidName.
//
// Put, for every backend:
//
//  1. fails with target.ErrExists if the name is taken (before reading r);
//  2. uploads r to a fresh name under .tmp/, hashing it on the way; the upload is refused
//     (its last read fails) unless size and SHA-256 match opts.SHA256;
//  3. verifies what the remote stored: its size, and its SHA-256 where the backend computes one,
//     else another hash the backend computes (MD5, SHA-1, ...) against the same hash of the
//     verified bytes, else the SHA-256 of the staged file read back in full;
//  4. publishes the staged file under the name: with a hard link where the backend has one that
//     refuses an existing name (sftp: atomic and create-only across processes), else with the
//     backend's server-side move after checking the name is free. Puts of one name through one
//     Target are serialised, so they never race; Puts from two processes can race in the window
//     between that check and the move, and on backends whose move replaces an existing file the
//     later one then wins. Custos writes the same bytes under a name on every attempt
//     (docs/design.md, section 5), so that race replaces an object with an identical one.
//
// Implementations hold no retry loops, metrics or tracing: rclone's own low-level retries are
// turned off (one attempt per call) and pkg/target/retry retries transient errors.
package rclone

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	rfs "github.com/rclone/rclone/fs"

	// The backends Custos supports; none other is linked.
	_ "github.com/rclone/rclone/backend/b2"
	_ "github.com/rclone/rclone/backend/box"
	_ "github.com/rclone/rclone/backend/drive"
	_ "github.com/rclone/rclone/backend/dropbox"
	_ "github.com/rclone/rclone/backend/local"
	_ "github.com/rclone/rclone/backend/pcloud"
	_ "github.com/rclone/rclone/backend/sftp"
	_ "github.com/rclone/rclone/backend/webdav"

	"github.com/custos-dev/custos/pkg/target"
)

var _ target.Target = (*Target)(nil)

const tmpDir = ".tmp"

// Target stores objects on one rclone remote. It is safe for concurrent use.
type Target struct {
	name    string
	backend string
	f       rfs.Fs
	link    bool              // publish with a hard link (create-only on the server)
	secrets map[string]string // values kept out of errors (plain and as passed to rclone)
	locks   nameLocks         // one Put per name at a time
	tmpMade atomic.Bool       // the staging directory exists
	cancel  func()            // ends the context the backend was built with
	closed  sync.Once
}

// New builds the backend and returns the target. The backend may reach the remote (sftp logs in
// to learn the root); a failure to reach it is returned as it is (transient), a configuration
// error matches target.ErrPermanent. ctx bounds this call only.
func New(ctx context.Context, cfg Config) (*Target, error) {
	t, err := newTarget(ctx, cfg)
	if err != nil {
		return nil, redact(fmt.Errorf("rclone: %s: %w", cfg.Label, err), cfg.Secrets)
	}
	return t, nil
}

func newTarget(ctx context.Context, cfg Config) (*Target, error) {
	ri, b, err := cfg.check()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", target.ErrPermanent, err)
	}
	m, values, err := cfg.configMap(ri, b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", target.ErrPermanent, err)
	}
	// The backend keeps the context it is built with (connection pools, token refresh), so it
	// gets one of its own that Close ends; ctx only bounds the build.
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	base, ci := rfs.AddConfig(base)
	ci.LowLevelRetries = 1 // one attempt per call: pkg/target/retry retries
	stop := context.AfterFunc(ctx, cancel)
	f, err := ri.NewFs(base, cfg.Label, cfg.Root, m)
	if !stop() && err == nil { // ctx ended while building, and with it the backend's context
		err = ctx.Err()
	}
	if err != nil {
		if f != nil { // some backends return one with an error (a root that is a file)
			if sd := f.Features().Shutdown; sd != nil {
				_ = sd(context.WithoutCancel(ctx))
			}
		}
		cancel()
		if errors.Is(err, rfs.ErrorIsFile) {
			return nil, fmt.Errorf("%w: root %q is a file, not a directory", target.ErrPermanent, cfg.Root)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, classify(err)
	}
	t := &Target{name: Kind + ":" + cfg.Label, backend: cfg.Backend, f: f, cancel: cancel,
		link:    b.linkPublish && f.Features().Copy != nil && values["copy_is_hardlink"] == "true",
		secrets: map[string]string{}}
	for k, v := range cfg.Secrets {
		t.secrets[k] = v
		t.secrets[k+" (obscured)"] = values[k]
	}
	return t, nil
}

// Name implements target.Reader.
func (t *Target) Name() string { return t.name }

// Kind implements target.Target.
func (t *Target) Kind() string { return Kind }

// Backend returns the rclone backend the target uses ("sftp", "webdav", ...).
func (t *Target) Backend() string { return t.backend }

// Close implements target.Target: it shuts the backend's connections down. Safe to call twice.
func (t *Target) Close() error {
	var err error
	t.closed.Do(func() {
		if sd := t.f.Features().Shutdown; sd != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = sd(ctx)
			cancel()
		}
		t.cancel()
	})
	if err != nil {
		return t.fail("close", "", err)
	}
	return nil
}

// Get implements target.Reader.
func (t *Target) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return t.GetRange(ctx, name, 0, -1)
}

// GetRange implements target.Reader.
func (t *Target) GetRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	obj, err := t.object(ctx, name)
	if err != nil {
		return nil, t.fail("get", name, err)
	}
	size := obj.Size()
	if offset < 0 || offset > size {
		return nil, t.fail("get", name, fmt.Errorf("offset %d, size %d: %w", offset, size, target.ErrInvalidRange))
	}
	end := size // exclusive
	if length >= 0 && offset+length < end {
		end = offset + length
	}
	if end == offset {
		return io.NopCloser(strings.NewReader("")), nil
	}
	rc, err := obj.Open(ctx, &rfs.RangeOption{Start: offset, End: end - 1})
	if err != nil {
		return nil, t.fail("get", name, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(rc, end-offset), rc}, nil
}

// Stat implements target.Reader. SHA256 is reported where the backend keeps a SHA-256 that costs
// no read of the object; elsewhere it is zero.
func (t *Target) Stat(ctx context.Context, name string) (target.Info, error) {
	obj, err := t.object(ctx, name)
	if err != nil {
		return target.Info{}, t.fail("stat", name, err)
	}
	info := target.Info{Name: name, Size: obj.Size(), ModTime: obj.ModTime(ctx)}
	if t.f.Hashes().Contains(hashSHA256) && !t.f.Features().SlowHash {
		if s, err := obj.Hash(ctx, hashSHA256); err == nil {
			if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
				info.SHA256 = [32]byte(b)
			}
		}
	}
	return info, nil
}

// List implements target.Reader. Directories are listed one at a time and their entries sorted
// as full names (a directory "a" sorts as "a/"), so objects come out in lexical order. Staging
// files and files with invalid names are skipped. fn's error is returned as is.
func (t *Target) List(ctx context.Context, prefix string, fn func(target.Info) error) error {
	if err := ctx.Err(); err != nil {
		return t.fail("list", prefix, err)
	}
	if err := target.ValidatePrefix(prefix); err != nil {
		return t.fail("list", prefix, err)
	}
	dir := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dir = prefix[:i]
	}
	return t.walk(ctx, dir, prefix, fn)
}

// errStop carries fn's error through walk untouched.
type errStop struct{ err error }

func (e errStop) Error() string { return e.err.Error() }

func (t *Target) walk(ctx context.Context, dir, prefix string, fn func(target.Info) error) error {
	err := t.walkDir(ctx, dir, prefix, fn)
	var stop errStop
	if errors.As(err, &stop) {
		return stop.err
	}
	if err != nil {
		return t.fail("list", prefix, err)
	}
	return nil
}

func (t *Target) walkDir(ctx context.Context, dir, prefix string, fn func(target.Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entries, err := t.f.List(ctx, dir)
	if errors.Is(err, rfs.ErrorDirNotFound) || errors.Is(err, rfs.ErrorIsFile) {
		return nil
	}
	if err != nil {
		return err
	}
	type entry struct {
		key string // full name, with "/" appended for a directory
		e   rfs.DirEntry
	}
	var todo []entry
	for _, e := range entries {
		name := e.Remote()
		key := name
		_, isDir := e.(rfs.Directory)
		if isDir {
			key += "/"
		}
		switch {
		case name == "" || name[0] == '.', target.ValidateName(name) != nil: // reserved or stray
		case strings.HasPrefix(key, prefix), isDir && strings.HasPrefix(prefix, key):
			todo = append(todo, entry{key, e})
		}
	}
	slices.SortFunc(todo, func(a, b entry) int { return strings.Compare(a.key, b.key) })
	for _, en := range todo {
		switch e := en.e.(type) {
		case rfs.Directory:
			if err := t.walkDir(ctx, e.Remote(), prefix, fn); err != nil {
				return err
			}
		case rfs.Object:
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(target.Info{Name: e.Remote(), Size: e.Size(), ModTime: e.ModTime(ctx)}); err != nil {
				return errStop{err}
			}
		}
	}
	return nil
}

// Delete implements target.Writer. Nothing on these remotes is ever locked. Empty directories
// are kept: removing them would race with a Put creating an object below them.
func (t *Target) Delete(ctx context.Context, name string) error {
	obj, err := t.object(ctx, name)
	if err != nil {
		return t.fail("delete", name, err)
	}
	if err := obj.Remove(ctx); err != nil {
		return t.fail("delete", name, err)
	}
	return nil
}

// object checks ctx and name and looks the object up.
func (t *Target) object(ctx context.Context, name string) (rfs.Object, error) {
	if err := t.check(ctx, name); err != nil {
		return nil, err
	}
	obj, err := t.f.NewObject(ctx, name)
	if err != nil {
		return nil, err
	}
	return obj, nil
}

func (t *Target) check(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := target.ValidateName(name); err != nil {
		return err
	}
	if name[0] == '.' {
		return fmt.Errorf("%w: %q is reserved on rclone targets", target.ErrInvalidName, name)
	}
	return nil
}

// fail classifies err and wraps it with the operation and name, keeping secrets out.
func (t *Target) fail(op, name string, err error) error {
	err = classify(err)
	if name != "" {
		err = fmt.Errorf("rclone %s: %s %s: %w", t.name, op, name, err)
	} else {
		err = fmt.Errorf("rclone %s: %s: %w", t.name, op, err)
	}
	return redact(err, t.secrets)
}

// tempName returns a fresh staging name under .tmp/.
func tempName() string {
	var b [12]byte
	rand.Read(b[:])
	return path.Join(tmpDir, "put-"+hex.EncodeToString(b[:]))
}

// nameLocks serialises operations on one name; waiting honours the context.
type nameLocks struct {
	mu sync.Mutex
	m  map[string]*nameLock
}

type nameLock struct {
	ch    chan struct{} // holds a token while locked
	users int
}

func (l *nameLocks) lock(ctx context.Context, name string) (unlock func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*nameLock{}
	}
	nl := l.m[name]
	if nl == nil {
		nl = &nameLock{ch: make(chan struct{}, 1)}
		l.m[name] = nl
	}
	nl.users++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		if nl.users--; nl.users == 0 {
			delete(l.m, name)
		}
		l.mu.Unlock()
	}
	select {
	case nl.ch <- struct{}{}:
		return func() { <-nl.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
