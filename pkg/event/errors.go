package event

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Named validation errors. Decode, Validate and Encode wrap exactly one of them with a message
// naming the offending field, so callers match with errors.Is and humans read the text. Error
// texts never contain customer ids, tenants' data or record bytes: they name fields, and quote
// only values that are part of the contract (types, classes, schemes, content types), truncated.
var (
	// ErrMalformed: the data is not a valid protobuf / JSON encoding of the event's message.
	ErrMalformed = errors.New("malformed event")
	// ErrUnknownType: the subject or ce-type names no known event type.
	ErrUnknownType = errors.New("unknown event type")
	// ErrMissingField: a required header or field is absent or empty.
	ErrMissingField = errors.New("missing required field")
	// ErrUnknownClass: meta.data_class is not a class of the policy.
	ErrUnknownClass = errors.New("unknown data class")
	// ErrOversized: the message, or an inline record, is larger than the limits allow.
	ErrOversized = errors.New("event too large")
	// ErrUnsupportedContentType: Content-Type is neither application/protobuf nor
	// application/json.
	ErrUnsupportedContentType = errors.New("unsupported content type")
	// ErrInvalidField: a header or field is present but its value is not allowed (bad format,
	// out of range, or disagreeing with another header or field).
	ErrInvalidField = errors.New("invalid field")
)

// Reason is a short, stable, lowercase code for err, for metrics labels and log fields: "malformed", "unknown_type", "missing_field", "unknown_class", "oversized",
// "unsupported_content_type", "invalid_field", or "other" for any other error.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrUnknownType):
		return "unknown_type"
	case errors.Is(err, ErrMissingField):
		return "missing_field"
	case errors.Is(err, ErrUnknownClass):
		return "unknown_class"
	case errors.Is(err, ErrOversized):
		return "oversized"
	case errors.Is(err, ErrUnsupportedContentType):
		return "unsupported_content_type"
	case errors.Is(err, ErrInvalidField):
		return "invalid_field"
	default:
		return "other"
	}
}

func missing(field string) error {
	return fmt.Errorf("%w: %s", ErrMissingField, field)
}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidField, field, fmt.Sprintf(format, args...))
}

// quote returns s quoted and cut to a short, printable form, for contract values (types,
// classes, schemes) echoed in error texts. It must never be used on customer data.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}
