package telemetry

import (
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Operation is a messaging operation type (OpenTelemetry messaging semantic conventions).
type Operation string

const (
	// OperationSend is publishing a message (producer spans, kind producer).
	OperationSend Operation = "send"
	// OperationReceive is fetching a message from the broker (kind consumer).
	OperationReceive Operation = "receive"
	// OperationProcess is handling a received message (kind consumer).
	OperationProcess Operation = "process"
)

// MessagingSystemNATS is messaging.system="nats". The semantic conventions have no
// predefined value for NATS, so the lowercase product name is used.
var MessagingSystemNATS = semconv.MessagingSystemKey.String("nats")

// operationName is messaging.operation.name for each type, and the first word of span names.
func (op Operation) operationName() string {
	switch op {
	case OperationSend:
		return "publish"
	default:
		return string(op)
	}
}

// SpanName is the span name for op on destination, e.g. "publish custos.v1.events.manual".
func SpanName(op Operation, destination string) string {
	return op.operationName() + " " + destination
}

// MessagingAttributes returns the semantic-convention attributes of a messaging span:
// messaging.system, messaging.operation.type and .name, messaging.destination.name and (when
// non-empty) messaging.message.id, followed by extra.
func MessagingAttributes(op Operation, destination, messageID string, extra ...attribute.KeyValue) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 5+len(extra))
	attrs = append(attrs,
		MessagingSystemNATS,
		semconv.MessagingOperationTypeKey.String(string(op)),
		semconv.MessagingOperationName(op.operationName()),
		semconv.MessagingDestinationName(destination),
	)
	if messageID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(messageID))
	}
	return append(attrs, extra...)
}

// MessageBodySize is messaging.message.body.size.
func MessageBodySize(n int) attribute.KeyValue { return semconv.MessagingMessageBodySize(n) }
