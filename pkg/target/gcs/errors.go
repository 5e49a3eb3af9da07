package gcs

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"

	"github.com/custos-dev/custos/pkg/target"
)

// classify maps what the SDK returned to the errors of the target contract, keeping the
// original in the chain for the message and for errors.As. Context errors, network errors and
// answers a retry can fix (5xx, 408, 429) are returned unchanged: they stay transient.
func classify(err error) error {
	var ge *googleapi.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storage.ErrObjectNotExist):
		return fmt.Errorf("%w: %w", target.ErrNotFound, err)
	case !errors.As(err, &ge):
		return err
	case ge.Code == http.StatusPreconditionFailed: // ifGenerationMatch=0 on a taken name
		return fmt.Errorf("%w: %w", target.ErrExists, err)
	case ge.Code == http.StatusForbidden && locked(ge):
		return fmt.Errorf("%w: %w", target.ErrLocked, err)
	case ge.Code == http.StatusBadRequest && mentions(ge, "crc32c"):
		// The service computed another CRC32C than the one Put sent. Both passes over the
		// reader matched the SHA-256, so the bytes changed on the way: worth another attempt.
		return err
	case ge.Code == http.StatusRequestTimeout, ge.Code == http.StatusTooManyRequests, ge.Code >= 500:
		return err
	case ge.Code >= 400:
		return fmt.Errorf("%w: %w", target.ErrPermanent, err)
	}
	return err
}

// locked reports whether a 403 is the service refusing to delete or replace an object under
// retention or a hold, rather than a missing permission. Google documents the reasons
// retentionPolicyNotMet and objectUnderActiveHold, but a held object has been seen answering
// with the generic reason "forbidden", so the message is checked too.
func locked(ge *googleapi.Error) bool {
	for _, e := range ge.Errors {
		if e.Reason == "retentionPolicyNotMet" || e.Reason == "objectUnderActiveHold" {
			return true
		}
	}
	return mentions(ge, "retention") || mentions(ge, "under active") && mentions(ge, "hold")
}

func mentions(ge *googleapi.Error, word string) bool {
	if strings.Contains(strings.ToLower(ge.Message), word) || strings.Contains(strings.ToLower(ge.Body), word) {
		return true
	}
	for _, e := range ge.Errors {
		if strings.Contains(strings.ToLower(e.Message), word) {
			return true
		}
	}
	return false
}

func hasStatus(err error, code int) bool {
	var ge *googleapi.Error
	return errors.As(err, &ge) && ge.Code == code
}
