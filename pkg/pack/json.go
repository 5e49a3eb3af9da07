package pack

import (
	"encoding/base64"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"time"
)

// A commit of a pack of a few thousand items spent a tenth of a worker's CPU on small events
// in reflection-driven JSON encoding of its manifest and catalog entries. The encoders here
// append the common case by hand and give exactly the bytes encoding/json gives, so the formats
// design.md describes do not change and sealing stays deterministic. Anything the common case
// does not cover (a string encoding/json would escape, a time it would refuse) goes to
// encoding/json, whole. TestJSONMatchesEncodingJSON and FuzzManifestEncoding hold them equal.

// jsonAppender appends JSON values; ok turns false at the first value it does not encode as
// encoding/json would.
type jsonAppender struct {
	b  []byte
	ok bool
}

func (a *jsonAppender) raw(s string) { a.b = append(a.b, s...) }

func (a *jsonAppender) str(s string) {
	if !plainJSON(s) {
		a.ok = false
		return
	}
	a.b = append(append(append(a.b, '"'), s...), '"')
}

func (a *jsonAppender) int(n int64)   { a.b = strconv.AppendInt(a.b, n, 10) }
func (a *jsonAppender) uint(n uint64) { a.b = strconv.AppendUint(a.b, n, 10) }

// time appends t as Time.MarshalJSON does: RFC 3339 with sub-second digits, refused outside
// what RFC 3339 can hold.
func (a *jsonAppender) time(t time.Time) {
	var err error
	a.b = append(a.b, '"')
	if a.b, err = t.AppendText(a.b); err != nil {
		a.ok = false
	}
	a.b = append(a.b, '"')
}

func (a *jsonAppender) entries(items []Entry) {
	if items == nil {
		a.raw("null")
		return
	}
	a.raw("[")
	for i := range items {
		e := &items[i]
		if i > 0 {
			a.raw(",")
		}
		a.raw(`{"id":`)
		a.str(e.ID)
		a.raw(`,"customer":`)
		a.str(e.Customer)
		a.raw(`,"seq":`)
		a.uint(e.Seq)
		a.raw(`,"event_time":`)
		a.time(e.EventTime)
		a.raw(`,"offset":`)
		a.int(e.Offset)
		a.raw(`,"length":`)
		a.int(e.Length)
		a.raw(`,"sha256":`)
		a.str(e.SHA256)
		a.raw("}")
	}
	a.raw("]")
}

// entryJSONSize is a generous guess of one entry's encoded size, to size buffers once.
const entryJSONSize = 384

// marshalManifest is json.Marshal(m).
func marshalManifest(m *Manifest) ([]byte, error) {
	a := jsonAppender{b: make([]byte, 0, 256+len(m.Items)*entryJSONSize+len(m.Keys)*160), ok: true}
	a.raw(`{"v":`)
	a.int(int64(m.V))
	a.raw(`,"pack":`)
	a.str(m.Pack)
	a.raw(`,"class":`)
	a.str(m.Class)
	a.raw(`,"size":`)
	a.int(m.Size)
	a.raw(`,"sha256":`)
	a.str(m.SHA256)
	a.raw(`,"newest_event":`)
	a.time(m.NewestEvent)
	a.raw(`,"items":`)
	a.entries(m.Items)
	if len(m.Keys) > 0 { // omitempty
		a.raw(`,"keys":{`)
		for i, k := range slices.Sorted(maps.Keys(m.Keys)) { // encoding/json sorts map keys
			if i > 0 {
				a.raw(",")
			}
			w := m.Keys[k]
			a.str(k)
			a.raw(`:{"kek":`)
			a.str(w.KEK)
			a.raw(`,"dek":`)
			if w.DEK == nil {
				a.raw("null")
			} else {
				a.b = append(base64.StdEncoding.AppendEncode(append(a.b, '"'), w.DEK), '"')
			}
			a.raw("}")
		}
		a.raw("}")
	}
	a.raw("}")
	if !a.ok {
		return json.Marshal(m)
	}
	return a.b, nil
}

// MarshalEntriesRecord is json.Marshal of struct{Pack, Class string; Items []Entry} with the
// JSON names pack, class and items: the catalog's per-customer record of a pack.
func MarshalEntriesRecord(packID, class string, items []Entry) ([]byte, error) {
	a := jsonAppender{b: make([]byte, 0, 128+len(items)*entryJSONSize), ok: true}
	a.raw(`{"pack":`)
	a.str(packID)
	a.raw(`,"class":`)
	a.str(class)
	a.raw(`,"items":`)
	a.entries(items)
	a.raw("}")
	if !a.ok {
		return json.Marshal(struct {
			Pack  string  `json:"pack"`
			Class string  `json:"class"`
			Items []Entry `json:"items"`
		}{packID, class, items})
	}
	return a.b, nil
}

// marshalItemMeta is json.Marshal(meta): an item's plaintext header.
func marshalItemMeta(meta *ItemMeta) ([]byte, error) {
	a := jsonAppender{b: make([]byte, 0, 4+160+len(meta.Tenant)+len(meta.CustomerID)+len(meta.RecordKey)+
		len(meta.EventID)+len(meta.ContentType)), ok: true}
	a.raw(`{"v":`)
	a.int(int64(meta.V))
	a.raw(`,"tenant":`)
	a.str(meta.Tenant)
	a.raw(`,"customer_id":`)
	a.str(meta.CustomerID)
	a.raw(`,"record_key":`)
	a.str(meta.RecordKey)
	a.raw(`,"event_id":`)
	a.str(meta.EventID)
	a.raw(`,"event_time":`)
	a.time(meta.EventTime)
	if meta.ContentType != "" { // omitempty
		a.raw(`,"content_type":`)
		a.str(meta.ContentType)
	}
	a.raw(`,"size":`)
	a.int(meta.Size)
	a.raw("}")
	if !a.ok {
		return json.Marshal(meta)
	}
	return a.b, nil
}

// plainJSON reports whether encoding/json writes s between quotes unchanged: printable ASCII
// other than the quote, the backslash and the characters it escapes for HTML (<, >, &).
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
