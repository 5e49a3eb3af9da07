package event

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Encode validates ev against the default Limits and returns the NATS message for it. See
// Limits.Encode.
func Encode(ev *Event, contentType string) (subject string, hdr nats.Header, data []byte, err error) {
	return Limits{}.Encode(ev, contentType)
}

// Encode validates ev and returns the subject, headers and data of its NATS message.
// contentType is ContentTypeProtobuf or ContentTypeJSON; empty means ev.ContentType, and
// ContentTypeProtobuf when that is empty too. The headers hold every CloudEvents attribute and
// Nats-Msg-Id (= ce-id); the caller adds trace context. The encoding is deterministic: encoding
// the same event twice gives the same bytes.
func (l Limits) Encode(ev *Event, contentType string) (subject string, hdr nats.Header, data []byte, err error) {
	if err := l.Validate(ev); err != nil {
		return "", nil, nil, err
	}
	if contentType == "" {
		contentType = ev.ContentType
	}
	switch contentType {
	case "", ContentTypeProtobuf:
		contentType = ContentTypeProtobuf
		data, err = proto.MarshalOptions{Deterministic: true}.Marshal(ev.Msg)
	case ContentTypeJSON:
		data, err = marshalJSON(ev.Msg)
	default:
		return "", nil, nil, fmt.Errorf("%w: %s", ErrUnsupportedContentType, quote(contentType))
	}
	if err != nil {
		return "", nil, nil, fmt.Errorf("%w: encode %s: %v", ErrMalformed, ev.Type, err)
	}
	meta := MetaOf(ev.Msg)
	hdr = nats.Header{
		HeaderSpecVersion: {SpecVersion},
		HeaderID:          {meta.GetEventId()},
		HeaderSource:      {ev.Source},
		HeaderType:        {ev.Type.CEType()},
		HeaderTime:        {meta.GetTime().AsTime().UTC().Format(time.RFC3339Nano)},
		HeaderContentType: {contentType},
		HeaderMsgID:       {meta.GetEventId()},
	}
	if ev.Subject != "" {
		hdr[HeaderSubject] = []string{ev.Subject}
	}
	if n, limit := MessageSize(hdr, data), l.maxEvent(); n > limit {
		return "", nil, nil, fmt.Errorf("%w: encoded %s event is %d bytes, limit %d", ErrOversized, ev.Type, n, limit)
	}
	return ev.Type.Subject(), hdr, data, nil
}

// marshalJSON encodes msg with proto field names. protojson deliberately varies its whitespace
// between runs; compacting makes the bytes stable.
func marshalJSON(msg proto.Message) ([]byte, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Decode parses and validates one received message: subject, headers and data as delivered by
// NATS. subject may be empty when unknown, in which case the type comes from ce-type alone.
// Every check of Limits.Validate applies, plus the header checks: ce-specversion is "1.0",
// ce-type is known and agrees with the subject, Content-Type is supported, ce-id equals
// meta.event_id (and Nats-Msg-Id, when present), ce-time equals meta.time, and the whole message
// fits lim.MaxEventBytes. Header names match in any letter case; a ce-* header, Content-Type or
// Nats-Msg-Id given more than once (under any spellings) with different values is invalid.
//
// The error wraps one of ErrMalformed, ErrUnknownType, ErrMissingField, ErrUnknownClass,
// ErrOversized, ErrUnsupportedContentType or ErrInvalidField; Reason(err) names it for a
// dead-letter header.
func Decode(subject string, hdr nats.Header, data []byte, lim Limits) (*Event, error) {
	if n, limit := MessageSize(hdr, data), lim.maxEvent(); n > limit {
		return nil, fmt.Errorf("%w: message is %d bytes, limit %d", ErrOversized, n, limit)
	}

	ceType, err := header(hdr, HeaderType)
	if err != nil {
		return nil, err
	}
	if ceType == "" {
		return nil, missing(HeaderType)
	}
	t, err := TypeFromCEType(ceType)
	if err != nil {
		return nil, err
	}
	if subject != "" {
		st, err := TypeFromSubject(subject)
		if err != nil {
			return nil, err
		}
		if st != t {
			return nil, invalid(HeaderType, "%s does not match subject %s", quote(ceType), quote(subject))
		}
	}

	h := map[string]string{}
	for _, name := range readHeaders[1:] {
		v, err := header(hdr, name)
		if err != nil {
			return nil, err
		}
		h[name] = v
	}
	if err := checkRepeatedExtensions(hdr, readHeaders); err != nil {
		return nil, err
	}
	switch h[HeaderSpecVersion] {
	case "":
		return nil, missing(HeaderSpecVersion)
	case SpecVersion:
	default:
		return nil, invalid(HeaderSpecVersion, "%s, want %q", quote(h[HeaderSpecVersion]), SpecVersion)
	}
	contentType, err := parseContentType(h[HeaderContentType])
	if err != nil {
		return nil, err
	}
	for _, name := range []string{HeaderID, HeaderSource, HeaderTime} {
		if h[name] == "" {
			return nil, missing(name)
		}
	}
	ceTime, err := time.Parse(time.RFC3339Nano, h[HeaderTime])
	if err != nil {
		return nil, invalid(HeaderTime, "not an RFC 3339 timestamp")
	}

	msg := t.NewMessage()
	switch contentType {
	case ContentTypeProtobuf:
		if err := proto.Unmarshal(data, msg); err != nil {
			return nil, fmt.Errorf("%w: data is not a protobuf %s", ErrMalformed, msg.ProtoReflect().Descriptor().FullName())
		}
	case ContentTypeJSON:
		if err := protojson.Unmarshal(data, msg); err != nil {
			// protojson's text may quote field values (customer data): keep only the position.
			return nil, fmt.Errorf("%w: data is not JSON for %s%s", ErrMalformed, msg.ProtoReflect().Descriptor().FullName(), jsonPosition(err))
		}
	}

	ev := &Event{
		Type:        t,
		Meta:        MetaOf(msg),
		Msg:         msg,
		ContentType: contentType,
		Source:      h[HeaderSource],
		Subject:     h[HeaderSubject],
	}
	if err := lim.Validate(ev); err != nil {
		return nil, err
	}
	if h[HeaderID] != ev.Meta.GetEventId() {
		return nil, invalid(HeaderID, "does not match meta.event_id")
	}
	if id := h[HeaderMsgID]; id != "" && id != ev.Meta.GetEventId() {
		return nil, invalid(HeaderMsgID, "does not match ce-id")
	}
	if !timeEqual(ceTime, ev.Meta.GetTime()) {
		return nil, invalid(HeaderTime, "does not match meta.time")
	}
	return ev, nil
}

// readHeaders are the headers Decode reads, ce-type first.
var readHeaders = []string{HeaderType, HeaderSpecVersion, HeaderContentType, HeaderID, HeaderSource, HeaderTime, HeaderSubject, HeaderMsgID}

// header returns the value of name in hdr, whatever the letter case of the name. Every
// spelling counts: a header given more than once, under one spelling or several (ce-type and
// Ce-Type), must carry the same value every time, or it is invalid.
func header(hdr nats.Header, name string) (string, error) {
	var val string
	found := false
	for k, vs := range hdr {
		if !strings.EqualFold(k, name) {
			continue
		}
		for _, v := range vs {
			switch {
			case !found:
				val, found = v, true
			case v != val:
				return "", invalid(name, "given more than once with different values")
			}
		}
	}
	return val, nil
}

// checkRepeatedExtensions applies header's rule to the ce-* headers Decode does not read
// (CloudEvents extensions): each must carry one value, whatever the letter case of its name.
// The name is not echoed: it is the producer's, not the contract's.
func checkRepeatedExtensions(hdr nats.Header, read []string) error {
	for k := range hdr {
		if len(k) < 3 || !strings.EqualFold(k[:3], "ce-") || slices.ContainsFunc(read, func(n string) bool { return strings.EqualFold(n, k) }) {
			continue
		}
		if _, err := header(hdr, k); err != nil {
			return invalid("ce-* extension header", "given more than once with different values")
		}
	}
	return nil
}

// parseContentType accepts the two data content types, with parameters (charset=utf-8).
func parseContentType(v string) (string, error) {
	if v == "" {
		return "", missing(HeaderContentType)
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil {
		return "", fmt.Errorf("%w: %s", ErrUnsupportedContentType, quote(v))
	}
	switch mt {
	case ContentTypeProtobuf:
		return mt, nil
	case ContentTypeJSON:
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
			return "", fmt.Errorf("%w: %s (JSON must be UTF-8)", ErrUnsupportedContentType, quote(v))
		}
		return mt, nil
	case "application/cloudevents+json", "application/cloudevents-batch+json":
		return "", fmt.Errorf("%w: %s (only CloudEvents binary mode is supported: attributes in ce-* headers, data in the body)", ErrUnsupportedContentType, quote(v))
	}
	return "", fmt.Errorf("%w: %s (want %s or %s)", ErrUnsupportedContentType, quote(mt), ContentTypeProtobuf, ContentTypeJSON)
}

// MessageSize is the size a message counts against MaxEventBytes (docs/events.md section 6):
// data plus, for each header value, its name, the value and 4 bytes.
func MessageSize(hdr nats.Header, data []byte) int {
	n := len(data)
	for k, vs := range hdr {
		for _, v := range vs {
			n += len(k) + len(v) + 4 // "k: v\r\n"
		}
	}
	return n
}

var jsonPos = regexp.MustCompile(`\(line \d+:\d+\)`)

func jsonPosition(err error) string {
	if p := jsonPos.FindString(err.Error()); p != "" {
		return " " + p
	}
	return ""
}
