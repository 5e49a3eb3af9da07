package rclone

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	rfs "github.com/rclone/rclone/fs"
	"github.com/rclone/rclone/fs/hash"
	"github.com/rclone/rclone/fs/object"

	"github.com/custos-dev/custos/pkg/target"
)

var hashSHA256 = hash.SHA256

// errNoLock refuses a Put that asks for a lock: no rclone remote can hold one.
var errNoLock = fmt.Errorf("%w: rclone remotes have no retention or legal hold: refusing to store an unlocked object", target.ErrNoLock)

// cleanupTimeout bounds the removal of a staging file after a Put, on a context of its own.
const cleanupTimeout = time.Minute

// Put implements target.Writer (see the package doc for the steps).
func (t *Target) Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	if err := t.put(ctx, name, r, size, opts); err != nil {
		return t.fail("put", name, err)
	}
	return nil
}

func (t *Target) put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	if err := t.check(ctx, name); err != nil {
		return err
	}
	if !opts.RetainUntil.IsZero() || opts.LegalHold {
		return errNoLock
	}
	unlock, err := t.locks.lock(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	if err := t.free(ctx, name); err != nil { // fail fast, before reading r
		return err
	}
	if !t.tmpMade.Load() {
		if err := t.mkdirs(ctx, tmpDir); err != nil {
			return err
		}
		t.tmpMade.Store(true)
	}
	tmp := tempName()
	staged, err := t.upload(ctx, tmp, r, size, opts.SHA256)
	defer t.removeStaged(ctx, tmp)
	if err != nil {
		return err
	}
	if err := t.verify(ctx, staged, size, opts.SHA256); err != nil {
		return err
	}
	if err := t.mkdirs(ctx, path.Dir(name)); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil { // cancelled after the upload: publish nothing
		return err
	}
	return t.publish(ctx, staged, name)
}

// mkdirs makes dir and its parents, the root included. A directory that another client creates
// at the same moment makes some servers refuse the creation (OpenSSH's SFTP server answers a bare
// failure) and rclone gives up on the path. The next call finds that directory there and goes on
// below it, so as many calls as the path has directories always get through.
func (t *Target) mkdirs(ctx context.Context, dir string) error {
	if dir == "." || dir == "" {
		return nil
	}
	p := path.Join(t.f.Root(), dir)
	levels := strings.Count(strings.Trim(p, "/"), "/") + 1
	var err error
	for range levels {
		if err = t.f.Mkdir(ctx, dir); err == nil || ctx.Err() != nil {
			break
		}
	}
	return err
}

// free returns nil when no object is stored under name, target.ErrExists when one is.
func (t *Target) free(ctx context.Context, name string) error {
	_, err := t.f.NewObject(ctx, name)
	switch {
	case err == nil:
		return target.ErrExists
	case errors.Is(err, rfs.ErrorIsDir):
		return conflict(name)
	case isNotFound(err):
		return nil
	}
	return err
}

// conflict reports a name that cannot exist on a directory tree because it is, or lies below,
// another object's path ("a" and "a/b"). Custos names never do that.
func conflict(name string) error {
	return fmt.Errorf("%w: %s conflicts with another object's path", target.ErrPermanent, name)
}

// staged is an uploaded staging file and the hashes of the verified bytes it should hold.
type staged struct {
	obj  rfs.Object
	sums map[hash.Type]string
}

// upload streams r to tmp through target.CopyVerified: the backend reads the bytes from a pipe
// whose last read fails unless size and SHA-256 match, and every hash the backend can compute is
// taken of the same bytes on the way.
func (t *Target) upload(ctx context.Context, tmp string, r io.ReadSeeker, size int64, sum [32]byte) (staged, error) {
	types := t.f.Hashes() &^ hash.Set(hash.SHA256) // SHA-256 is compared with sum directly
	mh, err := hash.NewMultiHasherTypes(types)
	if err != nil {
		return staged{}, err
	}
	pr, pw := io.Pipe()
	copied := make(chan error, 1)
	go func() {
		err := target.CopyVerified(ctx, io.MultiWriter(pw, mh), r, size, sum)
		pw.CloseWithError(err) // nil: the reader sees io.EOF
		copied <- err
	}()
	info := object.NewStaticObjectInfo(tmp, time.Now(), size, true, nil, t.f)
	obj, err := t.f.Put(ctx, pr, info)
	pr.CloseWithError(errUploadEnded) // frees the copier if the backend stopped reading
	cerr := <-copied
	if cerr == nil && err == nil {
		return staged{obj: obj, sums: mh.Sums()}, nil
	}
	switch { // what the backend stored is removed by removeStaged
	case ctx.Err() != nil:
		return staged{}, ctx.Err()
	case cerr != nil && !errors.Is(cerr, errUploadEnded): // the reader's verdict comes first
		return staged{}, cerr
	case err != nil:
		return staged{}, err
	}
	return staged{}, errors.New("the backend stopped reading before the end and reported success")
}

// errUploadEnded ends the copy into the pipe once the backend's Put has returned.
var errUploadEnded = errors.New("upload ended")

// verify checks what the backend stored under the staging name: size, then the strongest hash
// the backend computes, else a full read.
func (t *Target) verify(ctx context.Context, s staged, size int64, sum [32]byte) error {
	if got := s.obj.Size(); got >= 0 && got != size {
		return fmt.Errorf("%w: stored %d bytes, want %d", target.ErrChecksumMismatch, got, size)
	}
	want := hex.EncodeToString(sum[:])
	have := t.f.Hashes()
	if have.Contains(hash.SHA256) {
		if got, err := s.obj.Hash(ctx, hash.SHA256); err == nil && got != "" {
			if got != want {
				return fmt.Errorf("%w: stored sha256 %s, want %s", target.ErrChecksumMismatch, got, want)
			}
			return nil
		}
	}
	for _, ty := range have.Array() {
		exp, ok := s.sums[ty]
		if !ok || exp == "" {
			continue
		}
		got, err := s.obj.Hash(ctx, ty)
		if err != nil || got == "" { // not known for this object: try the next one
			continue
		}
		if got != exp {
			return fmt.Errorf("%w: stored %s %s, sent %s", target.ErrChecksumMismatch, ty, got, exp)
		}
		return nil
	}
	return t.readBack(ctx, s.obj, size, sum)
}

// readBack reads the whole staged object and compares its SHA-256: the check for backends that
// compute no hash (WebDAV servers other than ownCloud and Nextcloud).
func (t *Target) readBack(ctx context.Context, obj rfs.Object, size int64, sum [32]byte) error {
	rc, err := obj.Open(ctx)
	if err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("read back: %w", err)
	}
	if n != size || [32]byte(h.Sum(nil)) != sum {
		return fmt.Errorf("%w: read back %d bytes with sha256 %x, want %d bytes with %x", target.ErrChecksumMismatch, n, h.Sum(nil), size, sum)
	}
	return nil
}

// publish makes the staged object visible under name.
func (t *Target) publish(ctx context.Context, s staged, name string) error {
	feat := t.f.Features()
	var err error
	switch {
	case t.link:
		// A hard link fails when name exists: create-only on the server. The staging name is
		// removed afterwards (removeStaged).
		_, err = feat.Copy(ctx, s.obj, name)
		if !errors.Is(err, rfs.ErrorCantCopy) {
			break
		}
		fallthrough // the server has no hard links
	case feat.Move != nil:
		_, err = feat.Move(ctx, s.obj, name)
	case feat.Copy != nil:
		_, err = feat.Copy(ctx, s.obj, name)
	default:
		return fmt.Errorf("%w: the %s backend can neither move nor copy on the server", target.ErrPermanent, t.backend)
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// A refused move or link onto an existing name says so in the backend's own words; ask.
	if _, serr := t.f.NewObject(ctx, name); serr == nil {
		return target.ErrExists
	}
	return err
}

// removeStaged removes the staging file if it is still there, on a context of its own: the
// caller's may have ended, and a staging file must not outlive a failed Put.
func (t *Target) removeStaged(ctx context.Context, tmp string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if obj, err := t.f.NewObject(ctx, tmp); err == nil {
		_ = obj.Remove(ctx) // a leftover only costs space; the next Put uses another name
	}
}
