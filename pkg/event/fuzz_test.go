package event_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/custos-dev/custos/pkg/event"
)

// FuzzDecode feeds arbitrary subjects, headers and data to Decode: it must never panic, every
// error must be one of the named errors, and every accepted event must survive Encode and Decode
// unchanged. The seed corpus in testdata/fuzz/FuzzDecode holds valid events of every type and
// encoding (regenerate with CUSTOS_WRITE_FUZZ_CORPUS=1 go test -run TestWriteFuzzCorpus).
func FuzzDecode(f *testing.F) {
	f.Add("custos.v1.events.manual", "ce-type: dev.custos.manual.v1\n", []byte{})
	f.Fuzz(func(t *testing.T, subject, headers string, data []byte) {
		hdr := parseHeaders(headers)
		ev, err := event.Decode(subject, hdr, data, testLim)
		if err != nil {
			if ev != nil {
				t.Fatal("event returned with an error")
			}
			if event.Reason(err) == "other" {
				t.Fatalf("unnamed error: %v", err)
			}
			return
		}
		subject2, hdr2, data2, err := testLim.Encode(ev, ev.ContentType)
		if err != nil {
			t.Fatalf("accepted event does not encode: %v", err)
		}
		ev2, err := event.Decode(subject2, hdr2, data2, testLim)
		if err != nil {
			t.Fatalf("re-encoded event rejected: %v", err)
		}
		if ev2.Type != ev.Type || !proto.Equal(ev2.Msg, ev.Msg) || ev2.Source != ev.Source || ev2.Subject != ev.Subject {
			t.Fatalf("round trip changed the event")
		}
	})
}

// parseHeaders reads "name: value" lines; formatHeaders writes them, sorted.
func parseHeaders(s string) nats.Header {
	hdr := nats.Header{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			hdr.Add(k, v)
		}
	}
	return hdr
}

func formatHeaders(hdr nats.Header) string {
	var lines []string
	for k, vs := range hdr {
		for _, v := range vs {
			lines = append(lines, k+": "+v+"\n")
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "")
}

// TestWriteFuzzCorpus rewrites the committed seed corpus from valid(); it runs only when
// CUSTOS_WRITE_FUZZ_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("CUSTOS_WRITE_FUZZ_CORPUS") != "1" {
		t.Skip("set CUSTOS_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz/FuzzDecode")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, subject string, hdr nats.Header, data []byte) {
		body := fmt.Sprintf("go test fuzz v1\nstring(%q)\nstring(%q)\n[]byte(%q)\n", subject, formatHeaders(hdr), data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	msgs := valid()
	for _, typ := range event.Types {
		for _, ct := range []string{event.ContentTypeProtobuf, event.ContentTypeJSON} {
			subject, hdr, data := mustEncode(t, msgs[typ], ct)
			write(fmt.Sprintf("%s-%s", typ, strings.TrimPrefix(ct, "application/")), subject, hdr, data)
		}
	}
	subject, hdr, data := mustEncode(t, msgs[event.TypePostTransaction], event.ContentTypeJSON)
	hdr.Del(event.HeaderContentType)
	write("invalid-no-content-type", subject, hdr, data)
	subject, hdr, _ = mustEncode(t, msgs[event.TypePostTransaction], event.ContentTypeJSON)
	write("invalid-json", subject, hdr, []byte(`{"meta":{"event_id":1}}`))
}

func TestParseHeaders(t *testing.T) {
	t.Parallel()
	_, hdr, _ := mustEncode(t, valid()[event.TypeManual], "")
	got := parseHeaders(formatHeaders(hdr))
	if formatHeaders(got) != formatHeaders(hdr) {
		t.Fatalf("headers do not round trip:\n%s\n%s", formatHeaders(got), formatHeaders(hdr))
	}
}
