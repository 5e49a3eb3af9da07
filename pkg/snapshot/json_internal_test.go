package snapshot

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/pack"
)

// plainStrings are written as they are; escaped ones send the whole value to encoding/json. Most
// values use plain strings only, so that the hand-written path is what is compared.
var (
	plainStrings   = []string{"", "p0123abcdef", "sha256:00ff", "j1", "critical"}
	escapedStrings = []string{"a<b", "q\"uote", "back\\slash", "tab\t", "é", "\u2028", "&"}
)

// stringsFor returns a generator of field values: plain only, or now and then an escaped one.
func stringsFor(rng *rand.Rand, escapes bool) func() string {
	return func() string {
		if escapes && rng.IntN(8) == 0 {
			return escapedStrings[rng.IntN(len(escapedStrings))]
		}
		return plainStrings[rng.IntN(len(plainStrings))]
	}
}

func randomEntry(rng *rand.Rand, s func() string) pack.Entry {
	if rng.IntN(4) == 0 {
		return pack.Entry{}
	}
	times := []time.Time{{}, time.Date(2026, 12, 8, 3, 4, 5, 6, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	return pack.Entry{ID: s(), Customer: s(), Seq: rng.Uint64(), EventTime: times[rng.IntN(len(times))],
		Offset: rng.Int64N(1 << 40), Length: rng.Int64N(1 << 20), SHA256: s()}
}

// TestJSONMatchesEncodingJSON: the hand-written encoders of the task manifest and of the dedup
// cache give exactly encoding/json's bytes, escaping and omitted fields included, so the format
// design.md describes does not change. Values encoding/json refuses must be refused too.
func TestJSONMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		s := stringsFor(rng, i%4 == 0)
		m := Manifest{V: rng.IntN(3), Snapshot: s(), Class: s(), Task: rng.IntN(1000) - 5, Method: s()}
		if i%7 != 0 {
			m.Entries = []Entry{}
		}
		for range rng.IntN(6) {
			m.Entries = append(m.Entries, Entry{Customer: s(), Ref: s(), Digest: s(), Deleted: rng.IntN(2) == 0,
				Pack: s(), Item: randomEntry(rng, s)})
		}
		same(t, fmt.Sprintf("manifest %d", i), func() ([]byte, error) { return marshalManifest(&m) }, m)

		var k map[string]Known
		if i%5 != 0 {
			k = map[string]Known{}
		}
		for j := 0; k != nil && j < rng.IntN(6); j++ {
			k[s()] = Known{Digest: s(), Pack: s(), Item: randomEntry(rng, s), Job: s()}
		}
		same(t, fmt.Sprintf("cache %d", i), func() ([]byte, error) { return marshalKnown(k) }, k)
	}
}

func same(t *testing.T, what string, hand func() ([]byte, error), v any) {
	t.Helper()
	want, wantErr := json.Marshal(v)
	got, err := hand()
	if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got %s, %v\nwant %s, %v", what, got, err, want, wantErr)
	}
}
