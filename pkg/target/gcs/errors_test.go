package gcs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"

	"github.com/custos-dev/custos/pkg/target"
)

// TestClassify pins the mapping of service answers to target errors, with the messages Cloud
// Storage gives for objects under retention and holds (which the emulator cannot produce).
func TestClassify(t *testing.T) {
	apiErr := func(code int, reason, msg string) error {
		e := &googleapi.Error{Code: code, Message: msg}
		if reason != "" {
			e.Errors = []googleapi.ErrorItem{{Reason: reason, Message: msg}}
		}
		return fmt.Errorf("wrapped: %w", e)
	}
	for _, c := range []struct {
		name      string
		err       error
		want      error // nil: unchanged and transient
		permanent bool
	}{
		{"missing object", fmt.Errorf("x: %w", storage.ErrObjectNotExist), target.ErrNotFound, true},
		{"name taken", apiErr(412, "conditionNotMet", "At least one of the pre-conditions you specified did not hold."), target.ErrExists, true},
		{"retention", apiErr(403, "retentionPolicyNotMet", "Object 'b/o' is subject to bucket's retention policy or object retention and cannot be deleted or overwritten until 2030-01-01T00:00:00Z"), target.ErrLocked, true},
		{"temporary hold", apiErr(403, "forbidden", "Object 'b/o' is under active Temporary hold and cannot be deleted, overwritten or archived until hold is removed."), target.ErrLocked, true},
		{"event-based hold", apiErr(403, "objectUnderActiveHold", "Object 'b/o' is under active Event-Based hold and cannot be deleted, overwritten or archived until hold is removed."), target.ErrLocked, true},
		{"no permission", apiErr(403, "forbidden", "sa@p.iam.gserviceaccount.com does not have storage.objects.delete access to the Google Cloud Storage object."), nil, true},
		{"bad request", apiErr(400, "invalid", "Invalid argument."), nil, true},
		{"crc32c mismatch", apiErr(400, "invalid", `Provided CRC32C "AAAAAA==" doesn't match calculated CRC32C "BBBBBB==".`), nil, false},
		{"rate limited", apiErr(429, "rateLimitExceeded", "slow down"), nil, false},
		{"timeout", apiErr(408, "", "request timeout"), nil, false},
		{"server error", apiErr(503, "backendError", "backend error"), nil, false},
		{"network", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, nil, false},
		{"cancelled", context.Canceled, context.Canceled, false},
	} {
		got := classify(c.err)
		if c.want != nil && !errors.Is(got, c.want) {
			t.Errorf("%s: classify = %v, want %v", c.name, got, c.want)
		}
		if p := errors.Is(got, target.ErrPermanent); p != c.permanent {
			t.Errorf("%s: classify = %v, permanent %v, want %v", c.name, got, p, c.permanent)
		}
		if !errors.Is(got, c.err) {
			t.Errorf("%s: classify dropped the original error", c.name)
		}
	}
	if !hasStatus(fmt.Errorf("w: %w", &googleapi.Error{Code: http.StatusRequestedRangeNotSatisfiable}), 416) {
		t.Error("hasStatus misses a wrapped 416")
	}
}
