package pack

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// manifestLike builds a manifest of n items from r, with the strings and times given.
func manifestLike(r *rand.Rand, n int, s func(i int) string, t func(i int) time.Time) Manifest {
	m := Manifest{V: 1, Pack: s(0), Class: s(1), Size: r.Int64(), SHA256: s(2), NewestEvent: t(0)}
	if n >= 0 {
		m.Items = []Entry{}
	}
	for i := range n {
		m.Items = append(m.Items, Entry{ID: s(3 + i), Customer: s(4 + i), Seq: r.Uint64(), EventTime: t(1 + i),
			Offset: r.Int64N(1 << 40), Length: r.Int64N(1 << 30), SHA256: s(5 + i)})
	}
	return m
}

// The hand-written encodings give the bytes encoding/json gives, for every shape a manifest,
// a catalog record and an item header take: no items, items, keys absent, empty or many, a nil
// or empty data key, strings that need escaping, times in other zones or out of JSON's range.
func TestJSONMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	hex := func(i int) string { return fmt.Sprintf("%064x", r.Uint64()^uint64(i)) }
	odd := []string{"", "critical", `a"b`, `back\slash`, "<html>&", "tab\there", "é", "\u2028", "\xff\xfe", "ctl\x01", "~ok_-./"}
	oddS := func(i int) string { return odd[(i+r.IntN(len(odd)))%len(odd)] }
	zone := time.FixedZone("x", -(3*3600 + 30*60))
	now := time.Date(2026, 12, 7, 16, 0, 0, 123456789, time.UTC)
	times := []func(int) time.Time{
		func(i int) time.Time { return now.Add(time.Duration(i) * time.Millisecond) },
		func(i int) time.Time { return now.In(zone).Add(time.Duration(i)) },
		func(int) time.Time { return time.Time{} },
		func(int) time.Time { return now.Truncate(time.Second) },
	}
	var cases []Manifest
	for _, n := range []int{-1, 0, 1, 7, 500} {
		for _, tf := range times {
			cases = append(cases, manifestLike(r, n, hex, tf))
		}
		cases = append(cases, manifestLike(r, n, oddS, times[0]))
	}
	withKeys := manifestLike(r, 3, hex, times[0])
	withKeys.Keys = map[string]WrappedKey{hex(1): {KEK: "kek-1", DEK: []byte{1, 2, 3, 250}}, hex(2): {KEK: "kek-2"},
		hex(3): {KEK: "kek-3", DEK: []byte{}}, "z<": {KEK: "k", DEK: bytes.Repeat([]byte{7}, 40)}}
	emptyKeys := manifestLike(r, 2, hex, times[0])
	emptyKeys.Keys = map[string]WrappedKey{}
	cases = append(cases, withKeys, emptyKeys)
	for i, m := range cases {
		want, wantErr := json.Marshal(m)
		got, err := marshalManifest(&m)
		if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("manifest %d: got %s (%v)\nwant %s (%v)", i, got, err, want, wantErr)
		}
		want, wantErr = json.Marshal(struct {
			Pack  string  `json:"pack"`
			Class string  `json:"class"`
			Items []Entry `json:"items"`
		}{m.Pack, m.Class, m.Items})
		got, err = MarshalEntriesRecord(m.Pack, m.Class, m.Items)
		if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("entries %d: got %s (%v)\nwant %s (%v)", i, got, err, want, wantErr)
		}
		meta := ItemMeta{V: 1, Tenant: m.Class, CustomerID: m.Pack, RecordKey: m.SHA256, EventTime: m.NewestEvent,
			Size: m.Size}
		if len(m.Items) > 0 {
			meta.EventID, meta.ContentType = m.Items[0].ID, m.Items[0].Customer
		}
		want, wantErr = json.Marshal(meta)
		got, err = marshalItemMeta(&meta)
		if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("item meta %d: got %s (%v)\nwant %s (%v)", i, got, err, want, wantErr)
		}
	}
	// A year JSON cannot hold is refused, as encoding/json refuses it.
	far := manifestLike(r, 1, hex, func(int) time.Time { return time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) })
	if _, err := marshalManifest(&far); err == nil {
		t.Fatal("a manifest dated in the year 10000 was encoded")
	}
}

func FuzzManifestEncoding(f *testing.F) {
	f.Add("pack", "critical", "id", "cust", int64(5), []byte{1}, "kek")
	f.Add("a\"b", "<", "\xff", "\u2028", int64(-1), []byte(nil), "")
	f.Fuzz(func(t *testing.T, pack, class, id, cust string, nanos int64, dek []byte, kek string) {
		when := time.Unix(0, nanos).UTC()
		m := Manifest{V: 1, Pack: pack, Class: class, NewestEvent: when,
			Items: []Entry{{ID: id, Customer: cust, EventTime: when, SHA256: id}},
			Keys:  map[string]WrappedKey{cust: {KEK: kek, DEK: dek}, id: {KEK: class}}}
		want, wantErr := json.Marshal(m)
		got, err := marshalManifest(&m)
		if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("manifest: got %s (%v), want %s (%v)", got, err, want, wantErr)
		}
		meta := ItemMeta{V: 1, Tenant: pack, CustomerID: cust, RecordKey: id, EventID: class, EventTime: when,
			ContentType: kek, Size: nanos}
		want, wantErr = json.Marshal(meta)
		got, err = marshalItemMeta(&meta)
		if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("item meta: got %s (%v), want %s (%v)", got, err, want, wantErr)
		}
	})
}

func BenchmarkSealManifest(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	m := manifestLike(r, 2000, func(i int) string { return fmt.Sprintf("%064x", r.Uint64()^uint64(i)) },
		func(i int) time.Time { return time.Unix(1.8e9, int64(i)).UTC() })
	key := bytes.Repeat([]byte{9}, 32)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SealManifest(key, m); err != nil {
			b.Fatal(err)
		}
	}
}
