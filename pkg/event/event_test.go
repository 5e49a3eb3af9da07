package event_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/event"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Values that must never appear in an error text.
const (
	customerID = "cust-SECRET-4711"
	recordData = "record-bytes-SECRET"
)

var (
	testNow = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)
	testLim = event.Limits{Now: func() time.Time { return testNow }}
)

func meta(class string) *custosv1.Meta {
	return &custosv1.Meta{
		EventId:    "0b6c2a52-4f1e-4c3a-9d55-7a7f6c1e9b10",
		Time:       timestamppb.New(testNow.Add(-time.Second)),
		Tenant:     "acme",
		CustomerId: customerID,
		DataClass:  class,
	}
}

func inline(key, data string) *custosv1.Record {
	return &custosv1.Record{Key: key, ContentType: "application/json", Source: &custosv1.Record_Inline{Inline: []byte(data)}}
}

func ref(key, uri string) *custosv1.Record {
	return &custosv1.Record{Key: key, Source: &custosv1.Record_Ref{Ref: &custosv1.RecordRef{
		Uri: uri, Size: 1 << 20, Sha256: strings.Repeat("ab", 32),
	}}}
}

// valid returns one valid message of every type.
func valid() map[event.Type]proto.Message {
	return map[event.Type]proto.Message{
		event.TypePostTransaction: &custosv1.PostTransaction{
			Meta: meta("critical"), Record: inline("orders/42", recordData), TransactionId: "tx-1",
		},
		event.TypeDeletionRequest: &custosv1.DeletionRequest{
			Meta: meta(""), RequestedBy: "dpo@example.com", LegalBasis: "gdpr_art17",
		},
		event.TypeScheduleTick: &custosv1.ScheduleTick{
			Meta:     &custosv1.Meta{EventId: "tick-1", Time: timestamppb.New(testNow), Tenant: "acme", DataClass: "important"},
			Schedule: "important-weekly", Method: event.MethodIncremental, ScheduledFor: timestamppb.New(testNow.Add(-time.Minute)),
		},
		event.TypeComplianceDeadline: &custosv1.ComplianceDeadline{
			Meta:     &custosv1.Meta{EventId: "eom-2026-03", Time: timestamppb.New(testNow), Tenant: "acme", DataClass: "critical"},
			Deadline: "end_of_month", Due: timestamppb.New(time.Date(2026, 3, 31, 23, 59, 59, 0, time.UTC)),
		},
		event.TypeManual: &custosv1.ManualRequest{
			Meta: meta("non_essential"), Reason: "before migration", RequestedBy: "admin@example.com",
			Records: []*custosv1.Record{ref("files/big.bin", "nats-object://custos-items/files-big")},
		},
		event.TypeSuspiciousActivity: &custosv1.SuspiciousActivity{
			Meta: meta("critical"), Reason: "mass deletion", DetectedBy: "guard", Severity: event.SeverityHigh,
			Records: []*custosv1.Record{ref("docs/1", "https://files.example.com/docs/1")},
		},
	}
}

func mustEncode(t testing.TB, msg proto.Message, ct string) (string, nats.Header, []byte) {
	t.Helper()
	ev, err := event.New(msg, "//test/producer")
	if err != nil {
		t.Fatal(err)
	}
	subject, hdr, data, err := testLim.Encode(ev, ct)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return subject, hdr, data
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for typ, msg := range valid() {
		for _, ct := range []string{event.ContentTypeProtobuf, event.ContentTypeJSON} {
			t.Run(string(typ)+"/"+ct, func(t *testing.T) {
				t.Parallel()
				subject, hdr, data := mustEncode(t, msg, ct)
				if subject != typ.Subject() {
					t.Errorf("subject %q, want %q", subject, typ.Subject())
				}
				for k, want := range map[string]string{
					event.HeaderSpecVersion: "1.0",
					event.HeaderType:        typ.CEType(),
					event.HeaderContentType: ct,
					event.HeaderSource:      "//test/producer",
				} {
					if got := hdr.Get(k); got != want {
						t.Errorf("header %s = %q, want %q", k, got, want)
					}
				}
				ev, err := event.Decode(subject, hdr, data, testLim)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if ev.Type != typ || !proto.Equal(ev.Msg, msg) || ev.ContentType != ct || ev.Source != "//test/producer" {
					t.Fatalf("round trip changed the event: %v", ev)
				}
				if hdr.Get(event.HeaderID) != ev.ID() || hdr.Get(event.HeaderMsgID) != ev.ID() {
					t.Errorf("ce-id %q / Nats-Msg-Id %q, want %q", hdr.Get(event.HeaderID), hdr.Get(event.HeaderMsgID), ev.ID())
				}
				if ev.Meta != event.MetaOf(ev.Msg) {
					t.Error("Event.Meta is not the message's meta")
				}
			})
		}
	}
}

func TestEncodeDeterministic(t *testing.T) {
	t.Parallel()
	msg := valid()[event.TypeManual]
	for _, ct := range []string{event.ContentTypeProtobuf, event.ContentTypeJSON} {
		_, _, a := mustEncode(t, msg, ct)
		for range 5 {
			if _, _, b := mustEncode(t, proto.Clone(msg), ct); !bytes.Equal(a, b) {
				t.Fatalf("%s encoding not stable:\n%s\n%s", ct, a, b)
			}
		}
	}
}

func TestDecodeAccepts(t *testing.T) {
	t.Parallel()
	subject, hdr, _ := mustEncode(t, valid()[event.TypePostTransaction], event.ContentTypeJSON)
	camel := `{"meta":{"eventId":"0b6c2a52-4f1e-4c3a-9d55-7a7f6c1e9b10","time":"2026-03-14T15:09:25.535897Z",` +
		`"tenant":"acme","customerId":"` + customerID + `","dataClass":"critical"},` +
		`"record":{"key":"orders/42","contentType":"application/json","inline":"eyJ0b3RhbCI6NDJ9"},"transactionId":"tx-1"}`
	for name, tc := range map[string]struct {
		subject string
		hdr     func(nats.Header) nats.Header
	}{
		"lowerCamel JSON": {subject, func(h nats.Header) nats.Header { return h }},
		"no subject":      {"", func(h nats.Header) nats.Header { return h }},
		"json charset": {subject, func(h nats.Header) nats.Header {
			h.Set(event.HeaderContentType, "application/json; charset=utf-8")
			return h
		}},
		"no Nats-Msg-Id":   {subject, func(h nats.Header) nats.Header { h.Del(event.HeaderMsgID); return h }},
		"ce-time rfc3339":  {subject, func(h nats.Header) nats.Header { h.Set(event.HeaderTime, "2026-03-14T16:09:25.535897+01:00"); return h }},
		"upper-case names": {subject, upperHeaders},
	} {
		t.Run(name, func(t *testing.T) {
			h := tc.hdr(cloneHeader(hdr))
			if _, err := event.Decode(tc.subject, h, []byte(camel), testLim); err != nil {
				t.Fatalf("decode: %v", err)
			}
		})
	}
}

func upperHeaders(h nats.Header) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		out[strings.ToUpper(k)] = v
	}
	return out
}

func cloneHeader(h nats.Header) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		out[k] = append([]string(nil), v...)
	}
	return out
}

type decodeCase struct {
	name    string
	typ     event.Type          // default TypePostTransaction
	msg     func(proto.Message) // mutates a valid message before encoding
	hdr     func(nats.Header)   // mutates the encoded headers
	data    func([]byte) []byte // replaces the encoded data
	subject func(string) string // replaces the subject
	ct      string              // default protobuf
	lim     func(*event.Limits) // adjusts the limits
	want    error
}

func pt(f func(*custosv1.PostTransaction)) func(proto.Message) {
	return func(m proto.Message) { f(m.(*custosv1.PostTransaction)) }
}

func set(k, v string) func(nats.Header) { return func(h nats.Header) { h.Set(k, v) } }
func del(k string) func(nats.Header)    { return func(h nats.Header) { h.Del(k) } }
func data(s string) func([]byte) []byte { return func([]byte) []byte { return []byte(s) } }
func subj(s string) func(string) string { return func(string) string { return s } }

var decodeCases = []decodeCase{
	// Size.
	{name: "message over MaxEventBytes", lim: func(l *event.Limits) { l.MaxEventBytes = 100 }, want: event.ErrOversized},
	{name: "inline over MaxInlineBytes", lim: func(l *event.Limits) { l.MaxInlineBytes = 4 }, want: event.ErrOversized},
	{name: "inline_zstd over MaxInlineBytes", msg: pt(func(m *custosv1.PostTransaction) {
		m.Record.Source = &custosv1.Record_InlineZstd{InlineZstd: append([]byte{0x28, 0xb5, 0x2f, 0xfd}, make([]byte, 100)...)}
	}), lim: func(l *event.Limits) { l.MaxInlineBytes = 50 }, want: event.ErrOversized},
	{name: "inline_zstd not zstd", msg: pt(func(m *custosv1.PostTransaction) {
		m.Record.Source = &custosv1.Record_InlineZstd{InlineZstd: []byte(`{"total":42}`)}
	}), want: event.ErrInvalidField},

	// Type.
	{name: "ce-type missing", hdr: del(event.HeaderType), want: event.ErrMissingField},
	{name: "ce-type unknown", hdr: set(event.HeaderType, "dev.custos.nope.v1"), want: event.ErrUnknownType},
	{name: "ce-type other version", hdr: set(event.HeaderType, "dev.custos.post_transaction.v2"), want: event.ErrUnknownType},
	{name: "subject unknown type", subject: subj("custos.v1.events.nope"), want: event.ErrUnknownType},
	{name: "subject outside stream", subject: subj("orders.created"), want: event.ErrUnknownType},
	{name: "ce-type disagrees with subject", subject: subj(event.TypeManual.Subject()), want: event.ErrInvalidField},

	// CloudEvents headers.
	{name: "specversion missing", hdr: del(event.HeaderSpecVersion), want: event.ErrMissingField},
	{name: "specversion 0.3", hdr: set(event.HeaderSpecVersion, "0.3"), want: event.ErrInvalidField},
	{name: "ce-id missing", hdr: del(event.HeaderID), want: event.ErrMissingField},
	{name: "ce-id differs from event_id", hdr: set(event.HeaderID, "other"), want: event.ErrInvalidField},
	{name: "Nats-Msg-Id differs from ce-id", hdr: set(event.HeaderMsgID, "other"), want: event.ErrInvalidField},
	{name: "ce-source missing", hdr: del(event.HeaderSource), want: event.ErrMissingField},
	{name: "ce-source with space", hdr: set(event.HeaderSource, "my producer"), want: event.ErrInvalidField},
	{name: "ce-time missing", hdr: del(event.HeaderTime), want: event.ErrMissingField},
	{name: "ce-time not RFC 3339", hdr: set(event.HeaderTime, "yesterday"), want: event.ErrInvalidField},
	{name: "ce-time differs from meta.time", hdr: set(event.HeaderTime, "2026-03-14T15:09:26Z"), want: event.ErrInvalidField},
	{name: "ce-subject is the customer id", hdr: set(event.HeaderSubject, customerID), want: event.ErrInvalidField},
	{name: "header repeated with other value", hdr: func(h nats.Header) { h.Add(event.HeaderSource, "//other") }, want: event.ErrInvalidField},
	{name: "header repeated in other case", hdr: func(h nats.Header) {
		h.Del(event.HeaderType)
		h["CE-TYPE"] = []string{"dev.custos.post_transaction.v1"}
		h["Ce-Type"] = []string{"dev.custos.manual.v1"}
	}, want: event.ErrInvalidField},

	// Content type.
	{name: "content type missing", hdr: del(event.HeaderContentType), want: event.ErrMissingField},
	{name: "content type text/plain", hdr: set(event.HeaderContentType, "text/plain"), want: event.ErrUnsupportedContentType},
	{name: "content type structured mode", hdr: set(event.HeaderContentType, "application/cloudevents+json"), want: event.ErrUnsupportedContentType},
	{name: "content type json latin1", ct: event.ContentTypeJSON, hdr: set(event.HeaderContentType, "application/json; charset=latin1"), want: event.ErrUnsupportedContentType},
	{name: "content type unparsable", hdr: set(event.HeaderContentType, "application/;;"), want: event.ErrUnsupportedContentType},

	// Data.
	{name: "protobuf garbage", data: data("\xff\xff\xff\xff"), want: event.ErrMalformed},
	{name: "protobuf truncated", data: func(b []byte) []byte { return b[:len(b)-3] }, want: event.ErrMalformed},
	{name: "json syntax", ct: event.ContentTypeJSON, data: data(`{"meta":`), want: event.ErrMalformed},
	{name: "json unknown field", ct: event.ContentTypeJSON, data: data(`{"meta":{"customerID":"` + customerID + `"}}`), want: event.ErrMalformed},
	{name: "json wrong type", ct: event.ContentTypeJSON, data: data(`{"meta":{"customer_id":4711}}`), want: event.ErrMalformed},
	{name: "json invalid string", ct: event.ContentTypeJSON, data: data("{\"meta\":{\"customer_id\":\"\xff" + customerID + "\"}}"), want: event.ErrMalformed},
	{name: "protobuf sent as json", ct: event.ContentTypeProtobuf, hdr: set(event.HeaderContentType, event.ContentTypeJSON), want: event.ErrMalformed},
	{name: "empty data", data: data(""), want: event.ErrMissingField},

	// Meta.
	{name: "meta missing", msg: pt(func(m *custosv1.PostTransaction) { m.Meta = nil }), want: event.ErrMissingField},
	{name: "event_id empty", msg: pt(func(m *custosv1.PostTransaction) { m.Meta.EventId = "" }), hdr: set(event.HeaderID, "x"), want: event.ErrMissingField},
	{name: "event_id too long", msg: pt(func(m *custosv1.PostTransaction) { m.Meta.EventId = strings.Repeat("a", 129) }), want: event.ErrInvalidField},
	{name: "event_id not printable", msg: pt(func(m *custosv1.PostTransaction) { m.Meta.EventId = "a\nb" }), hdr: set(event.HeaderID, "a\nb"), want: event.ErrInvalidField},
	{name: "time missing", msg: pt(func(m *custosv1.PostTransaction) { m.Meta.Time = nil }), hdr: set(event.HeaderTime, "2026-03-14T15:09:25Z"), want: event.ErrMissingField},
	{name: "time invalid nanos", msg: pt(func(m *custosv1.PostTransaction) { m.Meta.Time.Nanos = 2e9 }), hdr: set(event.HeaderTime, "2026-03-14T15:09:25Z"), want: event.ErrInvalidField},
	{name: "time before 2000", msg: pt(func(m *custosv1.PostTransaction) { m.Meta.Time = timestamppb.New(time.Unix(0, 0)) }), want: event.ErrInvalidField},
	{name: "time in the future", msg: pt(func(m *custosv1.PostTransaction) { m.Meta.Time = timestamppb.New(testNow.Add(time.Hour)) }), want: event.ErrInvalidField},
	{name: "tenant missing", msg: pt(func(m *custosv1.PostTransaction) { m.Meta.Tenant = "" }), want: event.ErrMissingField},
	{name: "tenant with space", msg: pt(func(m *custosv1.PostTransaction) { m.Meta.Tenant = "a b" }), want: event.ErrInvalidField},
	{name: "customer_id missing", msg: pt(func(m *custosv1.PostTransaction) { m.Meta.CustomerId = "" }), want: event.ErrMissingField},
	{name: "customer_id control char", msg: pt(func(m *custosv1.PostTransaction) { m.Meta.CustomerId = customerID + "\x00" }), want: event.ErrInvalidField},
	{name: "customer_id too long", msg: pt(func(m *custosv1.PostTransaction) { m.Meta.CustomerId = strings.Repeat(customerID, 20) }), want: event.ErrInvalidField},
	{name: "data_class missing", msg: pt(func(m *custosv1.PostTransaction) { m.Meta.DataClass = "" }), want: event.ErrMissingField},
	{name: "data_class not in policy", lim: func(l *event.Limits) { l.Classes = []string{"important"} }, want: event.ErrUnknownClass},
	{name: "data_class bad characters", msg: pt(func(m *custosv1.PostTransaction) { m.Meta.DataClass = "crit ical" }), want: event.ErrInvalidField},

	// Record.
	{name: "record missing", msg: pt(func(m *custosv1.PostTransaction) { m.Record = nil }), want: event.ErrMissingField},
	{name: "record key empty", msg: pt(func(m *custosv1.PostTransaction) { m.Record.Key = "" }), want: event.ErrMissingField},
	{name: "record key control char", msg: pt(func(m *custosv1.PostTransaction) { m.Record.Key = "a\x7fb" }), want: event.ErrInvalidField},
	{name: "record source unset", msg: pt(func(m *custosv1.PostTransaction) { m.Record.Source = nil }), want: event.ErrMissingField},
	{name: "ref missing uri", msg: pt(func(m *custosv1.PostTransaction) { m.Record = ref("k", "") }), want: event.ErrMissingField},
	{name: "ref empty", msg: pt(func(m *custosv1.PostTransaction) { m.Record.Source = &custosv1.Record_Ref{Ref: &custosv1.RecordRef{}} }), want: event.ErrMissingField},
	{name: "ref scheme ftp", msg: pt(func(m *custosv1.PostTransaction) { m.Record = ref("k", "ftp://host/x") }), want: event.ErrInvalidField},
	{name: "ref scheme http", msg: pt(func(m *custosv1.PostTransaction) { m.Record = ref("k", "http://host/x") }), want: event.ErrInvalidField},
	{name: "ref scheme not in limits", lim: func(l *event.Limits) { l.RefSchemes = []string{"s3"} }, msg: pt(func(m *custosv1.PostTransaction) { m.Record = ref("k", "https://host/x") }), want: event.ErrInvalidField},
	{name: "ref relative", msg: pt(func(m *custosv1.PostTransaction) { m.Record = ref("k", "/just/a/path") }), want: event.ErrInvalidField},
	{name: "ref credentials", msg: pt(func(m *custosv1.PostTransaction) { m.Record = ref("k", "https://user:pw@host/x") }), want: event.ErrInvalidField},
	{name: "ref nats-object without name", msg: pt(func(m *custosv1.PostTransaction) { m.Record = ref("k", "nats-object://bucket/") }), want: event.ErrInvalidField},
	{name: "ref nats-object without bucket", msg: pt(func(m *custosv1.PostTransaction) { m.Record = ref("k", "nats-object:///name") }), want: event.ErrInvalidField},
	{name: "ref bad sha256", msg: pt(func(m *custosv1.PostTransaction) {
		m.Record = ref("k", "https://host/x")
		m.Record.GetRef().Sha256 = "ABC"
	}), want: event.ErrInvalidField},
	{name: "ref negative size", msg: pt(func(m *custosv1.PostTransaction) { m.Record = ref("k", "https://host/x"); m.Record.GetRef().Size = -1 }), want: event.ErrInvalidField},
	{name: "transaction_id control char", msg: pt(func(m *custosv1.PostTransaction) { m.TransactionId = "\x1b[31m" }), want: event.ErrInvalidField},

	// Other types.
	{name: "deletion without customer", typ: event.TypeDeletionRequest, msg: func(m proto.Message) { m.(*custosv1.DeletionRequest).Meta.CustomerId = "" }, want: event.ErrMissingField},
	{name: "deletion without requested_by", typ: event.TypeDeletionRequest, msg: func(m proto.Message) { m.(*custosv1.DeletionRequest).RequestedBy = "" }, want: event.ErrMissingField},
	{name: "deletion unknown class", typ: event.TypeDeletionRequest, msg: func(m proto.Message) { m.(*custosv1.DeletionRequest).Meta.DataClass = "gold" }, lim: func(l *event.Limits) { l.Classes = []string{"critical"} }, want: event.ErrUnknownClass},
	{name: "schedule without schedule", typ: event.TypeScheduleTick, msg: func(m proto.Message) { m.(*custosv1.ScheduleTick).Schedule = "" }, want: event.ErrMissingField},
	{name: "schedule without method", typ: event.TypeScheduleTick, msg: func(m proto.Message) { m.(*custosv1.ScheduleTick).Method = "" }, want: event.ErrMissingField},
	{name: "schedule bad method", typ: event.TypeScheduleTick, msg: func(m proto.Message) { m.(*custosv1.ScheduleTick).Method = "differential" }, want: event.ErrInvalidField},
	{name: "schedule without class", typ: event.TypeScheduleTick, msg: func(m proto.Message) { m.(*custosv1.ScheduleTick).Meta.DataClass = "" }, want: event.ErrMissingField},
	{name: "schedule bad scheduled_for", typ: event.TypeScheduleTick, msg: func(m proto.Message) { m.(*custosv1.ScheduleTick).ScheduledFor.Seconds = -1 << 62 }, want: event.ErrInvalidField},
	{name: "deadline without due", typ: event.TypeComplianceDeadline, msg: func(m proto.Message) { m.(*custosv1.ComplianceDeadline).Due = nil }, want: event.ErrMissingField},
	{name: "deadline without name", typ: event.TypeComplianceDeadline, msg: func(m proto.Message) { m.(*custosv1.ComplianceDeadline).Deadline = "" }, want: event.ErrMissingField},
	{name: "deadline bad name", typ: event.TypeComplianceDeadline, msg: func(m proto.Message) { m.(*custosv1.ComplianceDeadline).Deadline = "end of month" }, want: event.ErrInvalidField},
	{name: "manual without reason", typ: event.TypeManual, msg: func(m proto.Message) { m.(*custosv1.ManualRequest).Reason = "" }, want: event.ErrMissingField},
	{name: "manual without requested_by", typ: event.TypeManual, msg: func(m proto.Message) { m.(*custosv1.ManualRequest).RequestedBy = "" }, want: event.ErrMissingField},
	{name: "manual nil record", typ: event.TypeManual, msg: func(m proto.Message) {
		r := m.(*custosv1.ManualRequest)
		r.Records = append(r.Records, &custosv1.Record{})
	}, want: event.ErrMissingField},
	{name: "manual record oversized", typ: event.TypeManual, msg: func(m proto.Message) {
		r := m.(*custosv1.ManualRequest)
		r.Records = append(r.Records, inline("k", strings.Repeat(recordData, 20)))
	}, lim: func(l *event.Limits) { l.MaxInlineBytes = 100 }, want: event.ErrOversized},
	{name: "suspicious without customer", typ: event.TypeSuspiciousActivity, msg: func(m proto.Message) { m.(*custosv1.SuspiciousActivity).Meta.CustomerId = "" }, want: event.ErrMissingField},
	{name: "suspicious without detected_by", typ: event.TypeSuspiciousActivity, msg: func(m proto.Message) { m.(*custosv1.SuspiciousActivity).DetectedBy = "" }, want: event.ErrMissingField},
	{name: "suspicious bad severity", typ: event.TypeSuspiciousActivity, msg: func(m proto.Message) { m.(*custosv1.SuspiciousActivity).Severity = "apocalyptic" }, want: event.ErrInvalidField},
}

// rawEncode builds a message for msg without validating it, so invalid events can be decoded.
func rawEncode(t *testing.T, typ event.Type, msg proto.Message, ct string) (string, nats.Header, []byte) {
	t.Helper()
	var b []byte
	var err error
	if ct == event.ContentTypeJSON {
		b, err = protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
	} else {
		b, err = proto.Marshal(msg)
	}
	if err != nil {
		t.Fatal(err)
	}
	m := event.MetaOf(msg)
	hdr := nats.Header{}
	hdr.Set(event.HeaderSpecVersion, "1.0")
	hdr.Set(event.HeaderType, typ.CEType())
	hdr.Set(event.HeaderSource, "//test/producer")
	hdr.Set(event.HeaderContentType, ct)
	if m.GetEventId() != "" {
		hdr.Set(event.HeaderID, m.GetEventId())
		hdr.Set(event.HeaderMsgID, m.GetEventId())
	}
	if m.GetTime() != nil {
		hdr.Set(event.HeaderTime, m.GetTime().AsTime().Format(time.RFC3339Nano))
	}
	return typ.Subject(), hdr, b
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range decodeCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			typ := tc.typ
			if typ == "" {
				typ = event.TypePostTransaction
			}
			ct := tc.ct
			if ct == "" {
				ct = event.ContentTypeProtobuf
			}
			msg := valid()[typ]
			if tc.msg != nil {
				tc.msg(msg)
			}
			subject, hdr, data := rawEncode(t, typ, msg, ct)
			if tc.hdr != nil {
				tc.hdr(hdr)
			}
			if tc.data != nil {
				data = tc.data(data)
			}
			if tc.subject != nil {
				subject = tc.subject(subject)
			}
			lim := testLim
			if tc.lim != nil {
				tc.lim(&lim)
			}
			ev, err := event.Decode(subject, hdr, data, lim)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode: err = %v, want %v (event %v)", err, tc.want, ev)
			}
			if ev != nil {
				t.Errorf("Decode returned an event with an error")
			}
			for _, secret := range []string{customerID, recordData} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error text leaks data: %v", err)
				}
			}
			if event.Reason(err) == "other" {
				t.Errorf("Reason(%v) = other", err)
			}
			// The same event, checked before publishing, fails the same way (header-only
			// problems aside).
			if tc.hdr == nil && tc.data == nil && tc.subject == nil {
				ev, nerr := event.New(msg, "//test/producer")
				if nerr != nil {
					t.Fatal(nerr)
				}
				ev.ContentType = ct
				if _, _, _, err := lim.Encode(ev, ""); !errors.Is(err, tc.want) {
					t.Errorf("Encode: err = %v, want %v", err, tc.want)
				}
			}
		})
	}
}

func TestValidateEvent(t *testing.T) {
	t.Parallel()
	msg := valid()[event.TypePostTransaction]
	for name, tc := range map[string]struct {
		ev   *event.Event
		want error
	}{
		"nil event":          {nil, event.ErrMissingField},
		"nil message":        {&event.Event{Type: event.TypeManual}, event.ErrMissingField},
		"not an event":       {&event.Event{Type: event.TypeManual, Msg: timestamppb.Now(), Source: "s"}, event.ErrUnknownType},
		"type mismatch":      {&event.Event{Type: event.TypeManual, Msg: msg, Source: "s"}, event.ErrInvalidField},
		"no source":          {&event.Event{Type: event.TypePostTransaction, Msg: msg}, event.ErrMissingField},
		"foreign meta":       {&event.Event{Type: event.TypePostTransaction, Msg: msg, Source: "s", Meta: &custosv1.Meta{EventId: "x"}}, event.ErrInvalidField},
		"bad content type":   {&event.Event{Type: event.TypePostTransaction, Msg: msg, Source: "s", ContentType: "text/xml"}, event.ErrUnsupportedContentType},
		"subject with space": {&event.Event{Type: event.TypePostTransaction, Msg: msg, Source: "s", Subject: "a b"}, event.ErrInvalidField},
	} {
		if err := testLim.Validate(tc.ev); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
	}
	// Types whose customer_id is optional accept an empty one.
	for _, typ := range []event.Type{event.TypeScheduleTick, event.TypeComplianceDeadline, event.TypeManual} {
		m := valid()[typ]
		event.MetaOf(m).CustomerId = ""
		ev, _ := event.New(m, "s")
		if err := testLim.Validate(ev); err != nil {
			t.Errorf("%s without customer: %v", typ, err)
		}
	}
}

func TestTypes(t *testing.T) {
	t.Parallel()
	for _, typ := range event.Types {
		if got, err := event.TypeFromSubject(typ.Subject()); err != nil || got != typ {
			t.Errorf("TypeFromSubject(%q) = %q, %v", typ.Subject(), got, err)
		}
		if got, err := event.TypeFromCEType(typ.CEType()); err != nil || got != typ {
			t.Errorf("TypeFromCEType(%q) = %q, %v", typ.CEType(), got, err)
		}
		if got, err := event.TypeOf(typ.NewMessage()); err != nil || got != typ {
			t.Errorf("TypeOf(NewMessage(%q)) = %q, %v", typ, got, err)
		}
		if !strings.HasPrefix(typ.DLQSubject(), event.DLQSubjectPrefix) {
			t.Errorf("DLQSubject(%q) = %q", typ, typ.DLQSubject())
		}
	}
	if event.Type("nope").NewMessage() != nil || event.Type("nope").Valid() {
		t.Error("unknown type accepted")
	}
	if _, err := event.New(timestamppb.Now(), "s"); !errors.Is(err, event.ErrUnknownType) {
		t.Errorf("New(non-event) = %v", err)
	}
	if event.Reason(errors.New("x")) != "other" || event.Reason(nil) != "other" {
		t.Error("Reason of a foreign error")
	}
}

// A header may be written in any letter case and more than once, but only ever with one value:
// every spelling counts, not only the first one found (docs/events.md section 2).
func TestRepeatedHeaders(t *testing.T) {
	t.Parallel()
	subject, base, data := mustEncode(t, valid()[event.TypePostTransaction], event.ContentTypeProtobuf)
	id, ceTime := base.Get(event.HeaderID), base.Get(event.HeaderTime)
	postType, manualType := event.TypePostTransaction.CEType(), event.TypeManual.CEType()
	const other = "other-value-SECRET"
	for _, tc := range []struct {
		name string
		add  nats.Header // appended to the valid headers
		del  []string
		ok   bool
	}{
		// Different values: rejected.
		{name: "ce-type vs Ce-Type", add: nats.Header{"Ce-Type": {manualType}}},
		{name: "CE-TYPE vs Ce-Type, exact name absent", del: []string{event.HeaderType}, add: nats.Header{"CE-TYPE": {postType}, "Ce-Type": {manualType}}},
		{name: "ce-type twice", add: nats.Header{event.HeaderType: {manualType}}},
		{name: "ce-specversion vs CE-SPECVERSION", add: nats.Header{"CE-SPECVERSION": {"0.3"}}},
		{name: "ce-id vs Ce-Id", add: nats.Header{"Ce-Id": {other}}},
		{name: "ce-source vs CE-Source", add: nats.Header{"CE-Source": {"//" + other}}},
		{name: "ce-source twice", add: nats.Header{event.HeaderSource: {"//" + other}}},
		{name: "ce-time vs Ce-Time, same instant other text", add: nats.Header{"Ce-Time": {"2026-03-14T16:09:25.535897+01:00"}}},
		{name: "ce-subject vs Ce-Subject", add: nats.Header{event.HeaderSubject: {"p-1"}, "Ce-Subject": {other}}},
		{name: "Content-Type vs content-type", add: nats.Header{"content-type": {event.ContentTypeJSON}}},
		{name: "Nats-Msg-Id vs nats-msg-id", add: nats.Header{"nats-msg-id": {other}}},
		{name: "extension ce-partitionkey vs Ce-PartitionKey", add: nats.Header{"ce-partitionkey": {"p-1"}, "Ce-PartitionKey": {other}}},

		// The same value every time: accepted.
		{name: "ce-type vs Ce-Type, same value", add: nats.Header{"Ce-Type": {postType}}, ok: true},
		{name: "ce-id in three spellings", add: nats.Header{"Ce-Id": {id}, "CE-ID": {id}}, ok: true},
		{name: "ce-time twice", add: nats.Header{event.HeaderTime: {ceTime}, "CE-TIME": {ceTime}}, ok: true},
		{name: "ce-source vs CE-SOURCE, same value", add: nats.Header{"CE-SOURCE": {"//test/producer"}}, ok: true},
		{name: "Content-Type vs content-type, same value", add: nats.Header{"content-type": {event.ContentTypeProtobuf}}, ok: true},
		{name: "Nats-Msg-Id vs NATS-MSG-ID, same value", add: nats.Header{"NATS-MSG-ID": {id}}, ok: true},
		{name: "extension twice, same value", add: nats.Header{"ce-partitionkey": {"p-1"}, "CE-PARTITIONKEY": {"p-1"}}, ok: true},
		{name: "only other spellings", del: []string{event.HeaderType, event.HeaderID}, add: nats.Header{"Ce-Type": {postType}, "CE-ID": {id}}, ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := cloneHeader(base)
			for _, k := range tc.del {
				h.Del(k)
			}
			for k, vs := range tc.add {
				h[k] = append(h[k], vs...)
			}
			_, err := event.Decode(subject, h, data, testLim)
			if tc.ok {
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				return
			}
			if !errors.Is(err, event.ErrInvalidField) || !strings.Contains(err.Error(), "more than once with different values") {
				t.Fatalf("decode: err = %v, want %v: ... more than once with different values", err, event.ErrInvalidField)
			}
			if strings.Contains(err.Error(), other) {
				t.Errorf("error text echoes a header value: %v", err)
			}
		})
	}
}

// No part of a reference URI, which may name customers or carry a signed token, is echoed in an
// error text (docs/events.md section 7).
func TestRefErrorsDoNotEchoURI(t *testing.T) {
	t.Parallel()
	const secret = "SECRETtoken4711"
	for _, uri := range []string{
		"ftp://" + secret + "/x",
		secret + "://host/x",
		"https://user:" + secret + "@host/x?sig=" + secret,
		"nats-object://" + secret + "/",
		"nats-object:///" + secret,
		"/relative/" + secret,
		"https://host/" + secret + " with space",
		"https://host/?sig=" + strings.Repeat(secret, 200),
	} {
		msg := valid()[event.TypePostTransaction].(*custosv1.PostTransaction)
		msg.Record = ref("k", uri)
		ev, err := event.New(msg, "//test/producer")
		if err != nil {
			t.Fatal(err)
		}
		err = testLim.Validate(ev)
		if !errors.Is(err, event.ErrInvalidField) {
			t.Errorf("%.40s: err = %v, want %v", uri, err, event.ErrInvalidField)
			continue
		}
		if strings.Contains(strings.ToLower(err.Error()), strings.ToLower(secret)) {
			t.Errorf("error text echoes the URI: %v", err)
		}
	}
}

// messageSize counts a message as docs/events.md section 6 says, written from the document
// rather than calling event.MessageSize, so the test checks the code against the document.
func messageSize(hdr nats.Header, data []byte) int {
	n := len(data)
	for k, vs := range hdr {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// sizedManual returns a manual request with inline records whose message counts exactly size
// bytes.
func sizedManual(t *testing.T, size int) (string, nats.Header, []byte) {
	t.Helper()
	big := strings.Repeat("r", 200<<10)
	n := 1000
	for range 5 {
		msg := &custosv1.ManualRequest{Meta: meta("critical"), Reason: "size test", RequestedBy: "ops",
			Records: []*custosv1.Record{inline("a", big), inline("b", big), inline("c", big), inline("d", big), inline("e", strings.Repeat("r", n))}}
		ev, err := event.New(msg, "//test/producer")
		if err != nil {
			t.Fatal(err)
		}
		lim := testLim
		lim.MaxEventBytes = 2 * size
		subject, hdr, data, err := lim.Encode(ev, event.ContentTypeProtobuf)
		if err != nil {
			t.Fatal(err)
		}
		got := messageSize(hdr, data)
		if got == size {
			return subject, hdr, data
		}
		n += size - got
	}
	t.Fatalf("no manual request of %d bytes", size)
	return "", nil, nil
}

// The one documented whole-message limit is 1 MiB, counted as docs/events.md says: a message of
// exactly that size is accepted by the default limits, one byte more is oversized.
func TestDefaultMaxEventBytes(t *testing.T) {
	t.Parallel()
	if event.DefaultMaxEventBytes != 1<<20 || event.DefaultMaxInlineBytes != 256<<10 {
		t.Fatalf("defaults %d, %d differ from docs/events.md section 6", event.DefaultMaxEventBytes, event.DefaultMaxInlineBytes)
	}
	subject, hdr, data := sizedManual(t, event.DefaultMaxEventBytes)
	if _, err := event.Decode(subject, hdr, data, testLim); err != nil {
		t.Fatalf("message of exactly the limit: %v", err)
	}
	subject, hdr, data = sizedManual(t, event.DefaultMaxEventBytes+1)
	if _, err := event.Decode(subject, hdr, data, testLim); !errors.Is(err, event.ErrOversized) {
		t.Fatalf("message one byte over the limit: err = %v, want %v", err, event.ErrOversized)
	}
}
