package pack

import (
	"encoding/base64"
	"encoding/json"
	"maps"
	"slices"

	"github.com/custos-dev/custos/pkg/internal/jsonappend"
)

// The manifest, catalog-entry and item-header encoders here write by hand, with
// internal/jsonappend, what encoding/json writes; TestJSONMatchesEncodingJSON and
// FuzzManifestEncoding hold them equal.

// appendEntries appends json.Marshal(items) to a.
func appendEntries(a *jsonappend.Buf, items []Entry) {
	if items == nil {
		a.Raw("null")
		return
	}
	a.Raw("[")
	for i := range items {
		if i > 0 {
			a.Raw(",")
		}
		AppendEntry(a, &items[i])
	}
	a.Raw("]")
}

// AppendEntry appends json.Marshal(e) to a.
func AppendEntry(a *jsonappend.Buf, e *Entry) {
	a.Raw(`{"id":`)
	a.Str(e.ID)
	a.Raw(`,"customer":`)
	a.Str(e.Customer)
	a.Raw(`,"seq":`)
	a.Uint(e.Seq)
	a.Raw(`,"event_time":`)
	a.Time(e.EventTime)
	a.Raw(`,"offset":`)
	a.Int(e.Offset)
	a.Raw(`,"length":`)
	a.Int(e.Length)
	a.Raw(`,"sha256":`)
	a.Str(e.SHA256)
	a.Raw("}")
}

// entryJSONSize is a generous guess of one entry's encoded size, to size buffers once.
const entryJSONSize = 384

// marshalManifest is json.Marshal(m).
func marshalManifest(m *Manifest) ([]byte, error) {
	a := jsonappend.New(256 + len(m.Items)*entryJSONSize + len(m.Keys)*160)
	a.Raw(`{"v":`)
	a.Int(int64(m.V))
	a.Raw(`,"pack":`)
	a.Str(m.Pack)
	a.Raw(`,"class":`)
	a.Str(m.Class)
	a.Raw(`,"size":`)
	a.Int(m.Size)
	a.Raw(`,"sha256":`)
	a.Str(m.SHA256)
	a.Raw(`,"newest_event":`)
	a.Time(m.NewestEvent)
	a.Raw(`,"items":`)
	appendEntries(a, m.Items)
	if len(m.Keys) > 0 { // omitempty
		a.Raw(`,"keys":{`)
		for i, k := range slices.Sorted(maps.Keys(m.Keys)) { // encoding/json sorts map keys
			if i > 0 {
				a.Raw(",")
			}
			w := m.Keys[k]
			a.Str(k)
			a.Raw(`:{"kek":`)
			a.Str(w.KEK)
			a.Raw(`,"dek":`)
			if w.DEK == nil {
				a.Raw("null")
			} else {
				a.B = append(base64.StdEncoding.AppendEncode(append(a.B, '"'), w.DEK), '"')
			}
			a.Raw("}")
		}
		a.Raw("}")
	}
	a.Raw("}")
	return a.Bytes(m)
}

// MarshalEntriesRecord is json.Marshal of struct{Pack, Class string; Items []Entry} with the
// JSON names pack, class and items: the catalog's per-customer record of a pack.
func MarshalEntriesRecord(packID, class string, items []Entry) ([]byte, error) {
	a := jsonappend.New(128 + len(items)*entryJSONSize)
	a.Raw(`{"pack":`)
	a.Str(packID)
	a.Raw(`,"class":`)
	a.Str(class)
	a.Raw(`,"items":`)
	appendEntries(a, items)
	a.Raw("}")
	if !a.OK {
		return json.Marshal(struct {
			Pack  string  `json:"pack"`
			Class string  `json:"class"`
			Items []Entry `json:"items"`
		}{packID, class, items})
	}
	return a.B, nil
}

// marshalItemMeta is json.Marshal(meta): an item's plaintext header.
func marshalItemMeta(meta *ItemMeta) ([]byte, error) {
	a := jsonappend.New(4 + 160 + len(meta.Tenant) + len(meta.CustomerID) + len(meta.RecordKey) +
		len(meta.EventID) + len(meta.ContentType))
	a.Raw(`{"v":`)
	a.Int(int64(meta.V))
	a.Raw(`,"tenant":`)
	a.Str(meta.Tenant)
	a.Raw(`,"customer_id":`)
	a.Str(meta.CustomerID)
	a.Raw(`,"record_key":`)
	a.Str(meta.RecordKey)
	a.Raw(`,"event_id":`)
	a.Str(meta.EventID)
	a.Raw(`,"event_time":`)
	a.Time(meta.EventTime)
	if meta.ContentType != "" { // omitempty
		a.Raw(`,"content_type":`)
		a.Str(meta.ContentType)
	}
	a.Raw(`,"size":`)
	a.Int(meta.Size)
	a.Raw("}")
	return a.Bytes(meta)
}
