package s3

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/custos-dev/custos/pkg/target"
)

// classify turns an SDK error into the named target errors. What it does not recognise as
// permanent (5xx, throttling, timeouts, network errors, expired tokens) is returned as it is,
// so the retry wrapper retries it. The SDK's messages carry the operation, status, request ID
// and the service's message, never the credentials.
func classify(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if cerr := ctx.Err(); cerr != nil { // the call failed some other way as ctx ended
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	code, status := errorCode(err)
	switch code {
	case "NoSuchKey", "NotFound", "NoSuchVersion":
		return fmt.Errorf("%w (%w)", target.ErrNotFound, err)
	case "PreconditionFailed", "ConditionalRequestConflict":
		return fmt.Errorf("%w (%w)", target.ErrExists, err)
	case "BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest":
		return fmt.Errorf("%w (%w)", target.ErrChecksumMismatch, err)
	case "InvalidRange":
		return fmt.Errorf("%w (%w)", target.ErrInvalidRange, err)
	case "RequestTimeout", "ExpiredToken", "OperationAborted", "SlowDown", "Throttling",
		"ThrottlingException", "RequestThrottled", "TooManyRequests", "InternalError",
		"ServiceUnavailable", "RequestTimeTooSkewed":
		// RequestTimeTooSkewed: the SDK corrects its clock offset from the failed response.
		return err
	}
	switch {
	case status == http.StatusNotFound && code == "":
		return fmt.Errorf("%w (%w)", target.ErrNotFound, err) // HEAD responses have no body
	case status == http.StatusPreconditionFailed:
		return fmt.Errorf("%w (%w)", target.ErrExists, err)
	case status == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%w (%w)", target.ErrInvalidRange, err)
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests:
		return err
	case status >= 400 && status < 500:
		// Access denied, bad credentials, missing bucket, invalid request: a retry sends the
		// same request and gets the same answer.
		return fmt.Errorf("%w: %w", target.ErrPermanent, err)
	}
	return err
}

// errorCode returns the S3 error code and HTTP status of err, if it has them.
func errorCode(err error) (code string, status int) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	return code, status
}

// isCode reports whether err is a service error with one of codes.
func isCode(err error, codes ...string) bool {
	code, _ := errorCode(err)
	return code != "" && slices.Contains(codes, code)
}
