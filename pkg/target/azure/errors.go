package azure

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/custos-dev/custos/pkg/target"
)

// unsupportedError is returned by Put when it is asked for retention or a legal hold that the
// service or container cannot apply; nothing is stored then. It matches target.ErrPermanent.
type unsupportedError struct {
	reason string
	err    error // the service's answer, if it gave one
}

func (e *unsupportedError) Error() string {
	return "immutability not supported by this service: " + e.reason
}

func (e *unsupportedError) Is(target error) bool { return target == errPermanent }

func (e *unsupportedError) Unwrap() error { return e.err }

var errPermanent = target.ErrPermanent

// Error codes for version-level immutability that bloberror does not name.
const (
	codeImmutableDueToLegalHold bloberror.Code = "BlobImmutableDueToLegalHold"
	codeNotImplemented          bloberror.Code = "APINotImplemented" // Azurite's answer to immutability calls
)

// serviceError is an error response of the service, classified: it matches kind (a named
// target error, target.ErrPermanent, or nil for a transient error) and the SDK's
// *azcore.ResponseError with errors.Is and errors.As.
type serviceError struct {
	status int
	code   string
	kind   error
	resp   *azcore.ResponseError
}

func (e *serviceError) Error() string {
	msg := fmt.Sprintf("service answered %d %s", e.status, e.code)
	if e.kind != nil {
		msg = e.kind.Error() + ": " + msg
	}
	return msg
}

func (e *serviceError) Unwrap() []error {
	if e.kind == nil {
		return []error{e.resp}
	}
	return []error{e.kind, e.resp}
}

// classify turns an error of the SDK into one that callers can match: named target errors for
// the codes that mean them, target.ErrPermanent for other client errors, and a transient error
// (matching nothing) for throttling, server errors and network failures. Once ctx is done the
// error matches ctx.Err() as well, whatever the SDK made of it.
func classify(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		if errors.Is(err, cerr) {
			return err
		}
		return fmt.Errorf("%w: %w", cerr, err)
	}
	var authErr *azidentity.AuthenticationFailedError
	if errors.As(err, &authErr) && authErr.RawResponse != nil && permanentStatus(authErr.RawResponse.StatusCode) {
		// The identity platform refused the credential.
		return fmt.Errorf("%w: %w", target.ErrPermanent, err)
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return err // network failure or timeout: transient
	}
	return &serviceError{status: re.StatusCode, code: re.ErrorCode, kind: kindOf(re), resp: re}
}

// classifyAs is classify for a response whose meaning depends on the request: kind is what
// it means here (nil for transient).
func classifyAs(err error, kind error) error {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return err
	}
	return &serviceError{status: re.StatusCode, code: re.ErrorCode, kind: kind, resp: re}
}

func kindOf(re *azcore.ResponseError) error {
	switch code := bloberror.Code(re.ErrorCode); code {
	case bloberror.BlobNotFound:
		return target.ErrNotFound
	case bloberror.BlobAlreadyExists:
		return target.ErrExists
	case bloberror.BlobImmutableDueToPolicy, codeImmutableDueToLegalHold:
		return target.ErrLocked
	case bloberror.InvalidRange:
		return target.ErrInvalidRange
	case bloberror.ContainerNotFound, bloberror.ContainerBeingDeleted, bloberror.ContainerDisabled:
		// Not ErrNotFound: a missing container is a broken configuration, not a missing object.
		return target.ErrPermanent
	case bloberror.ServerBusy, bloberror.OperationTimedOut, bloberror.InternalError,
		bloberror.MD5Mismatch, bloberror.CRC64Mismatch:
		// A block the service received with another checksum than sent was damaged on the way:
		// sending it again may work.
		return nil
	case codeNotImplemented:
		return target.ErrPermanent
	}
	switch s := re.StatusCode; {
	case s == http.StatusNotFound:
		return target.ErrNotFound
	case permanentStatus(s):
		return target.ErrPermanent
	}
	return nil
}

// permanentStatus reports whether a request that got status would get it again: client
// errors but timeouts and throttling, and 501 Not Implemented.
func permanentStatus(s int) bool {
	switch {
	case s == http.StatusRequestTimeout, s == http.StatusTooManyRequests:
		return false
	case s == http.StatusNotImplemented:
		return true
	}
	return s >= 400 && s < 500
}
