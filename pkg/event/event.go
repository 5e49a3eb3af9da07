// Package event is the Custos trigger-event wire contract in code, shared by producers and
// workers: stream and subject names, the CloudEvents 1.0 binary-mode headers carried over NATS,
// the protobuf/JSON data encodings, and the validation every event must pass.
//
// A producer builds an Event (New), checks it (Validate) and turns it into a NATS message
// (Encode); a worker turns a received message back into an Event (Decode), which validates
// everything and returns errors matched with errors.Is (ErrMalformed, ErrMissingField, ...).
// docs/events.md describes the same contract for producers in other languages.
package event

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Streams and subjects.
const (
	// StreamName is the JetStream stream holding every trigger event.
	StreamName = "CUSTOS_EVENTS"
	// SubjectPrefix starts the subject of every event; the type's token follows it.
	SubjectPrefix = "custos.v1.events."
	// StreamSubjects is the subject filter of StreamName.
	StreamSubjects = SubjectPrefix + ">"

	// DLQStreamName is the JetStream stream holding events the worker rejected.
	DLQStreamName = "CUSTOS_DLQ"
	// DLQSubjectPrefix starts the subject of every dead-lettered event.
	DLQSubjectPrefix = "custos.v1.dlq."
	// DLQSubjects is the subject filter of DLQStreamName.
	DLQSubjects = DLQSubjectPrefix + ">"
)

// NATS header names. CloudEvents attributes use the binary content mode of the CloudEvents NATS
// protocol binding: one "ce-" header per attribute, the data as the message body.
const (
	HeaderSpecVersion = "ce-specversion" // required, "1.0"
	HeaderID          = "ce-id"          // required, == Meta.event_id
	HeaderSource      = "ce-source"      // required, producer identity (URI-reference)
	HeaderType        = "ce-type"        // required, Type.CEType()
	HeaderTime        = "ce-time"        // required, RFC 3339, == Meta.time
	HeaderSubject     = "ce-subject"     // optional, never a raw customer id
	HeaderContentType = "Content-Type"   // required, ContentTypeProtobuf or ContentTypeJSON
	HeaderMsgID       = "Nats-Msg-Id"    // set to ce-id, JetStream de-duplication
	HeaderTraceParent = "traceparent"    // optional, W3C Trace Context
	HeaderTraceState  = "tracestate"     // optional, W3C Trace Context
	// HeaderDLQReason is set by the worker on a dead-lettered message: why it was rejected
	// (the validation error text, which never holds customer data).
	HeaderDLQReason = "Custos-Dlq-Reason"
)

// SpecVersion is the only accepted ce-specversion.
const SpecVersion = "1.0"

// Content types of the event data.
const (
	// ContentTypeProtobuf is the binary protobuf encoding (the Go SDK's default).
	ContentTypeProtobuf = "application/protobuf"
	// ContentTypeJSON is the protobuf JSON mapping (protojson); field names may be the proto
	// names (customer_id) or lowerCamelCase (customerId).
	ContentTypeJSON = "application/json"
)

// Type is an event type. Its string is the last token of the event's subject.
type Type string

// The event types.
const (
	TypePostTransaction    Type = "post_transaction"
	TypeDeletionRequest    Type = "deletion_request"
	TypeScheduleTick       Type = "schedule_tick"
	TypeComplianceDeadline Type = "compliance_deadline"
	TypeManual             Type = "manual"
	TypeSuspiciousActivity Type = "suspicious_activity"
	// TypePostTransactionBatch carries several post-transaction events of one tenant and class
	// in one message (Batch). It is a transport form: each entry is handled as the
	// post-transaction event it is.
	TypePostTransactionBatch Type = "post_transaction_batch"
)

// Types lists every event type.
var Types = []Type{
	TypePostTransaction, TypeDeletionRequest, TypeScheduleTick,
	TypeComplianceDeadline, TypeManual, TypeSuspiciousActivity, TypePostTransactionBatch,
}

const ceTypePrefix, ceTypeSuffix = "dev.custos.", ".v1"

// Subject is the NATS subject events of type t are published on,
// e.g. "custos.v1.events.post_transaction".
func (t Type) Subject() string { return SubjectPrefix + string(t) }

// DLQSubject is the subject a rejected event of type t is dead-lettered on,
// e.g. "custos.v1.dlq.post_transaction".
func (t Type) DLQSubject() string { return DLQSubjectPrefix + string(t) }

// CEType is the ce-type header of events of type t, e.g. "dev.custos.post_transaction.v1".
func (t Type) CEType() string { return ceTypePrefix + string(t) + ceTypeSuffix }

// Valid reports whether t is a known type.
func (t Type) Valid() bool {
	for _, k := range Types {
		if t == k {
			return true
		}
	}
	return false
}

// NewMessage returns a new, empty message of t's protobuf type, or nil for an unknown type.
func (t Type) NewMessage() proto.Message {
	switch t {
	case TypePostTransaction:
		return &custosv1.PostTransaction{}
	case TypeDeletionRequest:
		return &custosv1.DeletionRequest{}
	case TypeScheduleTick:
		return &custosv1.ScheduleTick{}
	case TypeComplianceDeadline:
		return &custosv1.ComplianceDeadline{}
	case TypeManual:
		return &custosv1.ManualRequest{}
	case TypeSuspiciousActivity:
		return &custosv1.SuspiciousActivity{}
	case TypePostTransactionBatch:
		return &custosv1.PostTransactionBatch{}
	}
	return nil
}

// TypeFromSubject returns the type of an event subject ("custos.v1.events.manual" -> TypeManual).
func TypeFromSubject(subject string) (Type, error) {
	t, ok := strings.CutPrefix(subject, SubjectPrefix)
	if !ok || !Type(t).Valid() {
		return "", fmt.Errorf("%w: subject %s", ErrUnknownType, quote(subject))
	}
	return Type(t), nil
}

// TypeFromCEType returns the type named by a ce-type header value.
func TypeFromCEType(ceType string) (Type, error) {
	s, ok := strings.CutPrefix(ceType, ceTypePrefix)
	if ok {
		s, ok = strings.CutSuffix(s, ceTypeSuffix)
	}
	if !ok || !Type(s).Valid() {
		return "", fmt.Errorf("%w: ce-type %s", ErrUnknownType, quote(ceType))
	}
	return Type(s), nil
}

// TypeOf returns the type of an event message (*custosv1.PostTransaction, ...).
func TypeOf(msg proto.Message) (Type, error) {
	switch msg.(type) {
	case *custosv1.PostTransaction:
		return TypePostTransaction, nil
	case *custosv1.DeletionRequest:
		return TypeDeletionRequest, nil
	case *custosv1.ScheduleTick:
		return TypeScheduleTick, nil
	case *custosv1.ComplianceDeadline:
		return TypeComplianceDeadline, nil
	case *custosv1.ManualRequest:
		return TypeManual, nil
	case *custosv1.SuspiciousActivity:
		return TypeSuspiciousActivity, nil
	case *custosv1.PostTransactionBatch:
		return TypePostTransactionBatch, nil
	}
	return "", fmt.Errorf("%w: message %T is not a Custos event", ErrUnknownType, msg)
}

// Event is one trigger event: its typed message plus the CloudEvents attributes that travel in
// headers.
type Event struct {
	// Type of the event; agrees with Msg's protobuf type.
	Type Type
	// Meta is Msg's meta (the same pointer), for code that handles every type alike.
	Meta *custosv1.Meta
	// Msg is the typed message: *custosv1.PostTransaction, *custosv1.DeletionRequest, ...
	Msg proto.Message
	// ContentType is the data encoding, ContentTypeProtobuf or ContentTypeJSON. Empty means
	// ContentTypeProtobuf when encoding.
	ContentType string
	// Source is the ce-source: the producer's identity, e.g. "//billing.example.com/orders-api".
	Source string
	// Subject is the optional ce-subject. It must never be a raw customer id: leave it empty, or
	// use a pseudonym (e.g. a keyed hash) when consumers need to filter without decoding data.
	Subject string
}

// New returns the Event for msg (one of the custosv1 event messages) from source. It fails with
// ErrUnknownType for any other message; it does not validate (see Validate).
func New(msg proto.Message, source string) (*Event, error) {
	t, err := TypeOf(msg)
	if err != nil {
		return nil, err
	}
	return &Event{Type: t, Meta: MetaOf(msg), Msg: msg, Source: source}, nil
}

// MetaOf returns the meta of an event message (one of the custosv1 event types), or nil.
func MetaOf(msg proto.Message) *custosv1.Meta {
	switch m := msg.(type) {
	case *custosv1.PostTransaction:
		return m.GetMeta()
	case *custosv1.DeletionRequest:
		return m.GetMeta()
	case *custosv1.ScheduleTick:
		return m.GetMeta()
	case *custosv1.ComplianceDeadline:
		return m.GetMeta()
	case *custosv1.ManualRequest:
		return m.GetMeta()
	case *custosv1.SuspiciousActivity:
		return m.GetMeta()
	case *custosv1.PostTransactionBatch:
		return m.GetMeta()
	}
	return nil
}

// SetMeta sets the meta of an event message. It reports false (and does nothing) for a message
// that is not a Custos event.
func SetMeta(msg proto.Message, meta *custosv1.Meta) bool {
	switch m := msg.(type) {
	case *custosv1.PostTransaction:
		m.Meta = meta
	case *custosv1.DeletionRequest:
		m.Meta = meta
	case *custosv1.ScheduleTick:
		m.Meta = meta
	case *custosv1.ComplianceDeadline:
		m.Meta = meta
	case *custosv1.ManualRequest:
		m.Meta = meta
	case *custosv1.SuspiciousActivity:
		m.Meta = meta
	case *custosv1.PostTransactionBatch:
		m.Meta = meta
	default:
		return false
	}
	return true
}

// PostTransaction returns the message of a post-transaction event, or nil for another type.
func (e *Event) PostTransaction() *custosv1.PostTransaction {
	m, _ := e.Msg.(*custosv1.PostTransaction)
	return m
}

// DeletionRequest returns the message of a deletion-request event, or nil for another type.
func (e *Event) DeletionRequest() *custosv1.DeletionRequest {
	m, _ := e.Msg.(*custosv1.DeletionRequest)
	return m
}

// ScheduleTick returns the message of a schedule-tick event, or nil for another type.
func (e *Event) ScheduleTick() *custosv1.ScheduleTick {
	m, _ := e.Msg.(*custosv1.ScheduleTick)
	return m
}

// ComplianceDeadline returns the message of a compliance-deadline event, or nil for another type.
func (e *Event) ComplianceDeadline() *custosv1.ComplianceDeadline {
	m, _ := e.Msg.(*custosv1.ComplianceDeadline)
	return m
}

// ManualRequest returns the message of a manual event, or nil for another type.
func (e *Event) ManualRequest() *custosv1.ManualRequest {
	m, _ := e.Msg.(*custosv1.ManualRequest)
	return m
}

// SuspiciousActivity returns the message of a suspicious-activity event, or nil for another type.
func (e *Event) SuspiciousActivity() *custosv1.SuspiciousActivity {
	m, _ := e.Msg.(*custosv1.SuspiciousActivity)
	return m
}

// Batch returns the message of a post-transaction batch, or nil for another type.
func (e *Event) Batch() *custosv1.PostTransactionBatch {
	m, _ := e.Msg.(*custosv1.PostTransactionBatch)
	return m
}

// ID is the event id (Meta.event_id), or "" when Meta is nil.
func (e *Event) ID() string { return e.Meta.GetEventId() }
