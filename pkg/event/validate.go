package event

import (
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Length limits of fields, in bytes.
const (
	MaxEventIDLen    = 128
	MaxSourceLen     = 256
	MaxTenantLen     = 128
	MaxCustomerIDLen = 256
	MaxClassLen      = 64
	MaxRecordKeyLen  = 1024
	MaxURILen        = 2048
	MaxTextLen       = 4096 // reason, requested_by, legal_basis, transaction_id, ...
	MaxNameLen       = 64   // schedule, deadline
	// MaxBatchEvents bounds the entries of a PostTransactionBatch.
	MaxBatchEvents = 4096
	// MaxTraceContextLen bounds a batch entry's traceparent and tracestate (W3C allows 512
	// bytes of tracestate).
	MaxTraceContextLen = 512
)

// Validate checks ev against the default Limits (any data class). See Limits.Validate.
func Validate(ev *Event) error { return Limits{}.Validate(ev) }

// Validate checks everything about ev that does not depend on its encoding: the type agrees with
// the message, ce-source is set, every required field is present and every field is in range.
// The producer calls it before publishing; Decode calls it after parsing. The error wraps one of
// the package's named errors and names the field, never its value when that could be customer
// data.
func (l Limits) Validate(ev *Event) error {
	if ev == nil || ev.Msg == nil {
		return missing("data")
	}
	t, err := TypeOf(ev.Msg)
	if err != nil {
		return err
	}
	if ev.Type != t {
		return invalid("type", "event type %s does not match message %T", quote(string(ev.Type)), ev.Msg)
	}
	meta := MetaOf(ev.Msg)
	if ev.Meta != nil && ev.Meta != meta && !proto.Equal(ev.Meta, meta) {
		return invalid("meta", "Event.Meta differs from the message's meta")
	}
	if ev.Source == "" {
		return missing(HeaderSource)
	}
	if len(ev.Source) > MaxSourceLen || !isToken(ev.Source) {
		return invalid(HeaderSource, "must be 1 to %d printable ASCII characters without spaces", MaxSourceLen)
	}
	switch ev.ContentType {
	case "", ContentTypeProtobuf, ContentTypeJSON:
	default:
		return fmt.Errorf("%w: %s", ErrUnsupportedContentType, quote(ev.ContentType))
	}
	if ev.Subject != "" {
		if len(ev.Subject) > MaxSourceLen || !isToken(ev.Subject) {
			return invalid(HeaderSubject, "must be at most %d printable ASCII characters without spaces", MaxSourceLen)
		}
		if ev.Subject == meta.GetCustomerId() {
			return invalid(HeaderSubject, "must not be the raw customer id (leave it empty or use a pseudonym)")
		}
	}
	return l.validateMessage(ev.Msg)
}

func (l Limits) validateMessage(msg proto.Message) error {
	switch m := msg.(type) {
	case *custosv1.PostTransaction:
		if err := l.validateMeta(m.GetMeta(), true, true); err != nil {
			return err
		}
		if err := l.validateRecord("record", m.GetRecord()); err != nil {
			return err
		}
		return optionalText("transaction_id", m.GetTransactionId())

	case *custosv1.DeletionRequest:
		if err := l.validateMeta(m.GetMeta(), true, false); err != nil {
			return err
		}
		if err := requiredText("requested_by", m.GetRequestedBy()); err != nil {
			return err
		}
		return optionalText("legal_basis", m.GetLegalBasis())

	case *custosv1.ScheduleTick:
		if err := l.validateMeta(m.GetMeta(), false, true); err != nil {
			return err
		}
		if err := requiredName("schedule", m.GetSchedule()); err != nil {
			return err
		}
		switch m.GetMethod() {
		case "":
			return missing("method")
		case MethodIncremental, MethodFull, MethodDrill:
		default:
			return invalid("method", "%s is not %q, %q or %q", quote(m.GetMethod()), MethodIncremental, MethodFull, MethodDrill)
		}
		if m.ScheduledFor != nil {
			return checkTimestamp("scheduled_for", m.GetScheduledFor())
		}
		return nil

	case *custosv1.ComplianceDeadline:
		if err := l.validateMeta(m.GetMeta(), false, true); err != nil {
			return err
		}
		if err := requiredName("deadline", m.GetDeadline()); err != nil {
			return err
		}
		if m.GetDue() == nil {
			return missing("due")
		}
		return checkTimestamp("due", m.GetDue())

	case *custosv1.ManualRequest:
		if err := l.validateMeta(m.GetMeta(), false, true); err != nil {
			return err
		}
		if err := requiredText("reason", m.GetReason()); err != nil {
			return err
		}
		if err := requiredText("requested_by", m.GetRequestedBy()); err != nil {
			return err
		}
		return l.validateRecords(m.GetRecords())

	case *custosv1.SuspiciousActivity:
		if err := l.validateMeta(m.GetMeta(), true, true); err != nil {
			return err
		}
		if err := requiredText("reason", m.GetReason()); err != nil {
			return err
		}
		if err := requiredText("detected_by", m.GetDetectedBy()); err != nil {
			return err
		}
		switch m.GetSeverity() {
		case "", SeverityLow, SeverityMedium, SeverityHigh, SeverityCritical:
		default:
			return invalid("severity", "%s is not one of low, medium, high, critical", quote(m.GetSeverity()))
		}
		return l.validateRecords(m.GetRecords())

	case *custosv1.PostTransactionBatch:
		// The envelope only: each entry is checked by ValidateBatchEntry, so that one bad entry
		// is dead-lettered alone rather than taking its neighbours with it.
		if err := l.validateMeta(m.GetMeta(), false, true); err != nil {
			return err
		}
		if m.GetMeta().GetCustomerId() != "" {
			return invalid("meta.customer_id", "must be empty in a batch (each entry names its customer)")
		}
		switch n := len(m.GetEvents()); {
		case n == 0:
			return missing("events")
		case n > MaxBatchEvents:
			return invalid("events", "%d entries, at most %d", n, MaxBatchEvents)
		}
		return nil
	}
	_, err := TypeOf(msg)
	return err
}

// ValidateBatchEntry checks entry i of batch b: a valid post-transaction event on its own, of
// the batch's tenant and data class, with its record inline, and a well-formed trace context.
// The error names the entry ("events[3]: ...") and wraps the package's named errors.
func (l Limits) ValidateBatchEntry(b *custosv1.PostTransactionBatch, i int) error {
	err := l.validateBatchEntry(b, i)
	if err != nil {
		return fmt.Errorf("events[%d]: %w", i, err)
	}
	return nil
}

func (l Limits) validateBatchEntry(b *custosv1.PostTransactionBatch, i int) error {
	e := b.GetEvents()[i]
	pt := e.GetEvent()
	if pt == nil {
		return missing("event")
	}
	if err := l.validateMessage(pt); err != nil {
		return err
	}
	switch bm, m := b.GetMeta(), pt.GetMeta(); {
	case m.GetTenant() != bm.GetTenant():
		return invalid("event.meta.tenant", "differs from the batch's tenant")
	case m.GetDataClass() != bm.GetDataClass():
		return invalid("event.meta.data_class", "differs from the batch's data class")
	case pt.GetRecord().GetRef() != nil:
		return invalid("event.record.ref", "a batched event carries its record inline; send a record by reference in its own event")
	}
	for _, f := range []struct{ name, v string }{{"traceparent", e.GetTraceparent()}, {"tracestate", e.GetTracestate()}} {
		if len(f.v) > MaxTraceContextLen || !isText(f.v, false) {
			return invalid(f.name, "must be at most %d bytes without control characters", MaxTraceContextLen)
		}
	}
	return nil
}

// ScheduleTick methods. A tick with MethodDrill backs nothing up: it asks a worker to run the
// class's restore drill (docs/drills.md).
const (
	MethodIncremental = "incremental"
	MethodFull        = "full"
	MethodDrill       = "drill"
)

// SuspiciousActivity severities; empty means SeverityHigh.
const (
	SeverityLow      = "low"
	SeverityMedium   = "medium"
	SeverityHigh     = "high"
	SeverityCritical = "critical"
)

func (l Limits) validateMeta(m *custosv1.Meta, needCustomer, needClass bool) error {
	if m == nil {
		return missing("meta")
	}
	if err := checkEventID(m.GetEventId()); err != nil {
		return err
	}
	if m.GetTime() == nil {
		return missing("meta.time")
	}
	if err := checkTimestamp("meta.time", m.GetTime()); err != nil {
		return err
	}
	t := m.GetTime().AsTime()
	if t.Before(minTime) {
		return invalid("meta.time", "before 2000-01-01")
	}
	if skew := l.futureSkew(); t.After(l.now().Add(skew)) {
		return invalid("meta.time", "more than %s in the future", skew)
	}
	switch tenant := m.GetTenant(); {
	case tenant == "":
		return missing("meta.tenant")
	case len(tenant) > MaxTenantLen || !isToken(tenant):
		return invalid("meta.tenant", "must be 1 to %d printable ASCII characters without spaces", MaxTenantLen)
	}
	switch c := m.GetCustomerId(); {
	case c == "" && needCustomer:
		return missing("meta.customer_id")
	case len(c) > MaxCustomerIDLen || !isText(c, false):
		// Never echo the value: it is a raw customer identifier.
		return invalid("meta.customer_id", "must be at most %d bytes of UTF-8 without control characters", MaxCustomerIDLen)
	}
	switch c := m.GetDataClass(); {
	case c == "" && needClass:
		return missing("meta.data_class")
	case c == "":
	case len(c) > MaxClassLen || !isName(c, true):
		return invalid("meta.data_class", "must be at most %d letters, digits, '_', '-' or '.'", MaxClassLen)
	case !l.classAllowed(c):
		return fmt.Errorf("%w: meta.data_class %s (the policy defines %s)", ErrUnknownClass, quote(c), strings.Join(l.Classes, ", "))
	}
	return nil
}

func checkEventID(id string) error {
	switch {
	case id == "":
		return missing("meta.event_id")
	case len(id) > MaxEventIDLen:
		return invalid("meta.event_id", "longer than %d characters", MaxEventIDLen)
	case !isToken(id):
		return invalid("meta.event_id", "must be printable ASCII without spaces")
	}
	return nil
}

func checkTimestamp(field string, ts *timestamppb.Timestamp) error {
	if err := ts.CheckValid(); err != nil {
		return invalid(field, "not a valid timestamp")
	}
	return nil
}

func (l Limits) validateRecords(rs []*custosv1.Record) error {
	for i, r := range rs {
		if err := l.validateRecord(fmt.Sprintf("records[%d]", i), r); err != nil {
			return err
		}
	}
	return nil
}

func (l Limits) validateRecord(field string, r *custosv1.Record) error {
	if r == nil {
		return missing(field)
	}
	switch k := r.GetKey(); {
	case k == "":
		return missing(field + ".key")
	case len(k) > MaxRecordKeyLen || !isText(k, false):
		return invalid(field+".key", "must be at most %d bytes of UTF-8 without control characters", MaxRecordKeyLen)
	}
	if ct := r.GetContentType(); len(ct) > MaxNameLen*4 || !isText(ct, false) {
		return invalid(field+".content_type", "must be a MIME type of at most %d bytes", MaxNameLen*4)
	}
	switch src := r.GetSource().(type) {
	case nil:
		return missing(field + ".source (inline or ref)")
	case *custosv1.Record_Inline:
		if n, limit := len(src.Inline), l.maxInline(); n > limit {
			return fmt.Errorf("%w: %s.inline is %d bytes, limit %d (send larger records by ref)", ErrOversized, field, n, limit)
		}
	case *custosv1.Record_InlineZstd:
		// The decompressed size is checked by the worker, which decompresses it once anyway.
		if n, limit := len(src.InlineZstd), l.maxInline(); n > limit {
			return fmt.Errorf("%w: %s.inline_zstd is %d bytes, limit %d (send larger records by ref)", ErrOversized, field, n, limit)
		}
		if len(src.InlineZstd) < 4 || string(src.InlineZstd[:4]) != "\x28\xb5\x2f\xfd" {
			return invalid(field+".inline_zstd", "must be zstd compressed data (RFC 8878), starting with a frame")
		}
	case *custosv1.Record_Ref:
		return l.validateRef(field+".ref", src.Ref)
	}
	return nil
}

func (l Limits) validateRef(field string, ref *custosv1.RecordRef) error {
	if ref == nil {
		return missing(field)
	}
	raw := ref.GetUri()
	if raw == "" {
		return missing(field + ".uri")
	}
	if len(raw) > MaxURILen || !isToken(raw) {
		return invalid(field+".uri", "must be at most %d printable ASCII characters without spaces", MaxURILen)
	}
	// No part of the URI is echoed: its path may name customers and its query may carry a
	// signed token.
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return invalid(field+".uri", "not an absolute URI")
	}
	scheme := strings.ToLower(u.Scheme)
	if !l.schemeAllowed(scheme) {
		// Not even the scheme is echoed: it is the producer's text, not a contract value.
		return invalid(field+".uri", "scheme not allowed (allowed: %s)", strings.Join(l.refSchemes(), ", "))
	}
	if u.User != nil {
		return invalid(field+".uri", "must not carry credentials")
	}
	if u.Host == "" {
		return invalid(field+".uri", "missing host (the bucket, for %s)", SchemeNATSObject)
	}
	if scheme == SchemeNATSObject && strings.Trim(u.Path, "/") == "" {
		return invalid(field+".uri", "missing object name (nats-object://BUCKET/NAME)")
	}
	if ref.GetSize() < 0 {
		return invalid(field+".size", "negative")
	}
	if h := ref.GetSha256(); h != "" && !isHexSHA256(h) {
		return invalid(field+".sha256", "must be 64 lowercase hex digits")
	}
	return nil
}

func requiredText(field, s string) error {
	if s == "" {
		return missing(field)
	}
	return optionalText(field, s)
}

func optionalText(field, s string) error {
	if len(s) > MaxTextLen || !isText(s, true) {
		return invalid(field, "must be at most %d bytes of UTF-8 text", MaxTextLen)
	}
	return nil
}

func requiredName(field, s string) error {
	if s == "" {
		return missing(field)
	}
	if len(s) > MaxNameLen || !isName(s, true) {
		return invalid(field, "must be at most %d letters, digits, '_', '-' or '.'", MaxNameLen)
	}
	return nil
}

// isToken: printable ASCII, no spaces (safe in a NATS header value and in logs).
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// isName: ASCII letters, digits, '_', '-', and '.' when dots is set.
func isName(s string, dots bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		case c == '.' && dots:
		default:
			return false
		}
	}
	return true
}

// isText: valid UTF-8 without control characters (tab and newline allowed when multiline).
func isText(s string, multiline bool) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\t')) {
			return false
		}
	}
	return true
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// timeEqual reports whether a ce-time value and Meta.time name the same instant.
func timeEqual(a time.Time, ts *timestamppb.Timestamp) bool {
	return a.Equal(ts.AsTime())
}
