//go:build linux

package fs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/custos-dev/custos/pkg/target"
)

// Extended attributes that hold an object's lock. They are set on the staging file, so the
// link that publishes the object publishes its lock with it.
const (
	xattrRetainUntil = "user.custos.retain-until" // Unix nanoseconds, decimal
	xattrLegalHold   = "user.custos.legal-hold"   // present means held
)

// errNoXattr says the filesystem cannot hold locks; retrying will not help.
var errNoXattr = fmt.Errorf("%w: filesystem does not support extended attributes for retention", target.ErrPermanent)

func setLock(f *os.File, opts target.PutOptions) error {
	set := func(attr, val string) error {
		err := unix.Fsetxattr(int(f.Fd()), attr, []byte(val), 0)
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
			return errNoXattr
		}
		if err != nil {
			return fmt.Errorf("set %s: %w", attr, err)
		}
		return nil
	}
	if !opts.RetainUntil.IsZero() {
		if err := set(xattrRetainUntil, strconv.FormatInt(opts.RetainUntil.UnixNano(), 10)); err != nil {
			return err
		}
	}
	if opts.LegalHold {
		return set(xattrLegalHold, "1")
	}
	return nil
}

func getLock(path string) (until time.Time, hold bool, err error) {
	get := func(attr string) (string, bool, error) {
		buf := make([]byte, 64)
		n, err := unix.Getxattr(path, attr, buf)
		switch {
		case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EOPNOTSUPP):
			return "", false, nil
		case errors.Is(err, syscall.ENOENT):
			return "", false, target.ErrNotFound
		case err != nil:
			return "", false, fmt.Errorf("get %s: %w", attr, err)
		}
		return string(buf[:n]), true, nil
	}
	v, ok, err := get(xattrRetainUntil)
	if err != nil {
		return time.Time{}, false, err
	}
	if ok {
		ns, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return time.Time{}, false, fmt.Errorf("%w: bad %s %q", target.ErrLocked, xattrRetainUntil, v) // fail closed
		}
		until = time.Unix(0, ns)
	}
	_, hold, err = get(xattrLegalHold)
	return until, hold, err
}
