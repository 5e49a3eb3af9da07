package rclone

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"strings"

	"github.com/rclone/rclone/backend/webdav/api"
	rfs "github.com/rclone/rclone/fs"
	"github.com/rclone/rclone/fs/fserrors"

	"github.com/custos-dev/custos/pkg/target"
)

// isNotFound reports whether err says the object (or a directory on its path) is missing.
func isNotFound(err error) bool {
	return errors.Is(err, rfs.ErrorObjectNotFound) || errors.Is(err, rfs.ErrorIsDir) ||
		errors.Is(err, rfs.ErrorDirNotFound) || errors.Is(err, rfs.ErrorNotAFile) || errors.Is(err, iofs.ErrNotExist)
}

// permanentMessages are SSH failures that no retry fixes: refused credentials and a host key
// that does not match the known one.
var permanentMessages = []string{"unable to authenticate", "knownhosts: key mismatch", "knownhosts: key is unknown",
	"host key mismatch", "no supported methods remain"}

// classify maps an error of rclone or its backends to the target package's named errors:
// missing objects to target.ErrNotFound; errors rclone marks fatal or not worth retrying, refused
// permissions and credentials, and WebDAV 4xx answers (but 408, 423 and 429) to
// target.ErrPermanent. Everything else is returned as it is: transient, for pkg/target/retry.
func classify(err error) error {
	var dav *api.Error
	switch {
	case err == nil, errors.Is(err, target.ErrPermanent),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case isNotFound(err):
		return fmt.Errorf("%w: %w", target.ErrNotFound, err)
	case errors.As(err, &dav) && dav.StatusCode >= 400 && dav.StatusCode < 500 &&
		dav.StatusCode != 408 && dav.StatusCode != 423 && dav.StatusCode != 429:
		return fmt.Errorf("%w: %w", target.ErrPermanent, err)
	case fserrors.IsFatalError(err), fserrors.IsNoRetryError(err), errors.Is(err, rfs.ErrorPermissionDenied),
		errors.Is(err, iofs.ErrPermission):
		return fmt.Errorf("%w: %w", target.ErrPermanent, err)
	}
	msg := err.Error()
	for _, m := range permanentMessages {
		if strings.Contains(msg, m) {
			return fmt.Errorf("%w: %w", target.ErrPermanent, err)
		}
	}
	return err
}

// redactedError is an error whose message had secrets replaced; errors.Is and errors.As still
// see the error it stands for.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// minRedacted is the shortest secret redact looks for: shorter values would blot out ordinary
// words, and no credential is that short.
const minRedacted = 4

// redact keeps every value of secrets out of err's message. Custos's own messages never quote a
// secret; this catches a backend's message that would.
func redact(err error, secrets map[string]string) error {
	if err == nil {
		return nil
	}
	msg, changed := err.Error(), false
	for _, s := range secrets {
		if len(s) >= minRedacted && strings.Contains(msg, s) {
			msg, changed = strings.ReplaceAll(msg, s, "[secret]"), true
		}
	}
	if !changed {
		return err
	}
	return &redactedError{msg: msg, err: err}
}
