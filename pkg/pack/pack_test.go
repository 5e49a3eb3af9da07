package pack_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/target"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// item makes a pack item whose sealed bytes are a stand-in (Build does not open them).
func item(id, customer string, seq uint64, minutes int) pack.Item {
	return pack.Item{ID: id, Customer: customer, Seq: seq, EventTime: t0.Add(time.Duration(minutes) * time.Minute),
		Sealed: []byte("sealed:" + id + strings.Repeat("x", int(seq)))}
}

func ids(m pack.Manifest) []string {
	out := make([]string, len(m.Items))
	for i, e := range m.Items {
		out[i] = e.ID
	}
	return out
}

func TestBuild(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		items   []pack.Item
		wantIDs []string
		newest  int // minutes after t0
	}{
		{"empty", nil, []string{}, -1},
		{"one item", []pack.Item{item("i1", "pa", 7, 3)}, []string{"i1"}, 3},
		{"ordered by stream sequence", []pack.Item{item("i3", "pa", 30, 1), item("i1", "pb", 10, 9), item("i2", "pa", 20, 2)},
			[]string{"i1", "i2", "i3"}, 9},
		{"same sequence ordered by id", []pack.Item{item("i2", "pa", 5, 0), item("i1", "pa", 5, 0), item("i0", "pb", 4, 0)},
			[]string{"i0", "i1", "i2"}, 0},
		{"duplicate delivery kept once", []pack.Item{item("i1", "pa", 1, 0), item("i2", "pa", 2, 5), item("i1", "pa", 1, 0)},
			[]string{"i1", "i2"}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := pack.Build(testClass, tc.items)
			m := b.Manifest
			if got := ids(m); !slices.Equal(got, tc.wantIDs) {
				t.Fatalf("pack order %v, want %v", got, tc.wantIDs)
			}
			if m.V != 1 || m.Class != testClass || m.Pack != pack.PackID(tc.wantIDs) {
				t.Fatalf("manifest header %+v", m)
			}
			var want []byte
			byID := map[string]pack.Item{}
			for _, it := range tc.items {
				byID[it.ID] = it
			}
			for _, e := range m.Items {
				it := byID[e.ID]
				if e.Offset != int64(len(want)) || e.Length != int64(len(it.Sealed)) {
					t.Fatalf("entry %s at %d+%d, want %d+%d", e.ID, e.Offset, e.Length, len(want), len(it.Sealed))
				}
				sum := sha256.Sum256(it.Sealed)
				if e.SHA256 != hex.EncodeToString(sum[:]) || e.Customer != it.Customer || e.Seq != it.Seq || !e.EventTime.Equal(it.EventTime) {
					t.Fatalf("entry %+v does not describe item %s", e, it.ID)
				}
				if !bytes.Equal(b.Data[e.Offset:e.Offset+e.Length], it.Sealed) {
					t.Fatalf("bytes of %s are not at its offset", e.ID)
				}
				want = append(want, it.Sealed...)
			}
			if !bytes.Equal(b.Data, want) || m.Size != int64(len(want)) {
				t.Fatalf("pack is not the concatenation of its items (%d bytes, want %d)", len(b.Data), len(want))
			}
			if b.Sum != sha256.Sum256(want) || m.SHA256 != hex.EncodeToString(b.Sum[:]) {
				t.Fatal("pack checksum is wrong")
			}
			wantNewest := time.Time{}
			if tc.newest >= 0 {
				wantNewest = t0.Add(time.Duration(tc.newest) * time.Minute)
			}
			if !m.NewestEvent.Equal(wantNewest) {
				t.Fatalf("newest event %v, want %v", m.NewestEvent, wantNewest)
			}
		})
	}
}

// The same set of items makes the same pack whatever order they arrived in (design.md 2).
func TestBuildDeterministic(t *testing.T) {
	t.Parallel()
	var items []pack.Item
	for i := range 40 {
		items = append(items, item(fmt.Sprintf("i%02d", i), fmt.Sprintf("p%02x", i%5), uint64(100+i/2), i%7))
	}
	first := pack.Build(testClass, items)
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		shuffled := slices.Clone(items)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got := pack.Build(testClass, shuffled); !reflect.DeepEqual(got, first) {
			t.Fatal("the same items in another order built another pack")
		}
	}
	// Event times in another zone are stored in UTC, so the manifest bytes do not change.
	zoned := slices.Clone(items)
	for i := range zoned {
		zoned[i].EventTime = zoned[i].EventTime.In(time.FixedZone("X", 3600))
	}
	a, _ := json.Marshal(first.Manifest)
	b, _ := json.Marshal(pack.Build(testClass, zoned).Manifest)
	if !bytes.Equal(a, b) {
		t.Fatalf("event time zone changed the manifest:\n%s\n%s", a, b)
	}
}

func TestPackID(t *testing.T) {
	t.Parallel()
	// Known answer, computed from design.md section 2.
	h := sha256.Sum256([]byte("custos-pack-v1" + "pitem1" + "pitem2"))
	want := hex.EncodeToString(h[:16])
	if got := pack.PackID([]string{"pitem1", "pitem2"}); got != want {
		t.Fatalf("PackID = %s, want %s", got, want)
	}
	if pack.PackID([]string{"pitem1", "pitem2"}) != pack.PackID([]string{"pitem1", "pitem2"}) {
		t.Fatal("PackID is not deterministic")
	}
	for _, other := range [][]string{{"pitem2", "pitem1"}, {"pitem1"}, {"pitem1", "pitem2", "pitem3"}, nil} {
		if pack.PackID(other) == want {
			t.Errorf("PackID(%q) collides with PackID([pitem1 pitem2])", other)
		}
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(pack.PackID(nil)) {
		t.Fatalf("PackID(nil) = %q", pack.PackID(nil))
	}
}

// Object names are pseudonymous and valid on every target (design.md section 2).
func TestObjectNames(t *testing.T) {
	t.Parallel()
	kms, err := keys.NewLocalKMS(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32))
	if err != nil {
		t.Fatal(err)
	}
	const tenant, customer = "acme-shop", "alice@example.com"
	pseudo := kms.Pseudonym(tenant, customer)
	var items []pack.Item
	for i := range 3 {
		id := kms.Pseudonym("item:"+tenant, fmt.Sprintf("ev-%d#0", i))
		items = append(items, pack.Item{ID: id, Customer: pseudo, Seq: uint64(i + 1), EventTime: t0, Sealed: []byte{byte(i)}})
	}
	id := pack.Build(testClass, items).Manifest.Pack
	again := pack.Build(testClass, items).Manifest.Pack
	if id != again || pack.ObjectName(id) != pack.ObjectName(again) {
		t.Fatal("the same items gave another name")
	}
	for _, tc := range []struct{ name, pattern string }{
		{pack.ObjectName(id), `^packs/([0-9a-f]{2})/([0-9a-f]{32})$`},
		{pack.ManifestName(id), `^manifests/([0-9a-f]{2})/([0-9a-f]{32})$`},
	} {
		m := regexp.MustCompile(tc.pattern).FindStringSubmatch(tc.name)
		if m == nil || m[2] != id || m[1] != id[:2] {
			t.Fatalf("name %q does not match %s for pack %s", tc.name, tc.pattern, id)
		}
		if err := target.ValidateName(tc.name); err != nil {
			t.Fatalf("name %q is not a valid target name: %v", tc.name, err)
		}
		for _, secret := range []string{tenant, customer, "alice", "ev-0", pseudo, items[0].ID} {
			if strings.Contains(tc.name, secret) {
				t.Fatalf("name %q holds %q", tc.name, secret)
			}
		}
	}
}

func sealedManifest(t *testing.T) (pack.Manifest, []byte) {
	t.Helper()
	codec := newCodec(t)
	var items []pack.Item
	for i, c := range []string{testPseudo, "p99112233445566778899aabbccddeeff", testPseudo} {
		id := fmt.Sprintf("p%032x", i+1)
		sealed, err := codec.SealItem(testDEK, c, testClass, id, testMeta(), []byte(fmt.Sprint("record ", i)))
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, pack.Item{ID: id, Customer: c, Seq: uint64(10 + i), Sealed: sealed,
			EventTime: t0.Add(time.Duration(i) * time.Nanosecond)})
	}
	m := pack.Build(testClass, items).Manifest
	sealed, err := pack.SealManifest(testCatalog, m)
	if err != nil {
		t.Fatal(err)
	}
	return m, sealed
}

func TestManifestRoundTrip(t *testing.T) {
	t.Parallel()
	m, sealed := sealedManifest(t)
	got, err := pack.OpenManifest(testCatalog, m.Pack, sealed)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("manifest changed in a round trip:\n%+v\n%+v", got, m)
	}
	again, err := pack.SealManifest(testCatalog, got)
	if err != nil || !bytes.Equal(again, sealed) {
		t.Fatalf("re-sealing a manifest gave other bytes (%v)", err)
	}
	// Format: design.md section 5.
	js, err := crypto.Open(testCatalog, crypto.AAD("custos-manifest", m.Pack), sealed)
	if err != nil {
		t.Fatalf("manifest is not sealed with the documented aad: %v", err)
	}
	nonce := crypto.DeriveNonce(testCatalog, m.Pack, sha256.Sum256(js))
	if !bytes.Equal(sealed[1:33], nonce.Salt[:]) || !bytes.Equal(sealed[33:40], nonce.Prefix[:]) {
		t.Fatal("manifest nonce is not derived from (pack id, SHA-256 of the JSON)")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(js, &raw); err != nil {
		t.Fatal(err)
	}
	if got, want := slices.Sorted(maps.Keys(raw)), []string{"class", "items", "newest_event", "pack", "sha256", "size", "v"}; !slices.Equal(got, want) {
		t.Fatalf("manifest fields %v, want %v", got, want)
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(raw["items"], &items); err != nil {
		t.Fatal(err)
	}
	if got, want := slices.Sorted(maps.Keys(items[0])), []string{"customer", "event_time", "id", "length", "offset", "seq", "sha256"}; !slices.Equal(got, want) {
		t.Fatalf("manifest item fields %v, want %v", got, want)
	}
}

func TestManifestRejected(t *testing.T) {
	t.Parallel()
	m, sealed := sealedManifest(t)
	seal := func(v any) []byte {
		js, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out, err := crypto.Seal(testCatalog, crypto.AAD("custos-manifest", m.Pack), crypto.DeriveNonce(testCatalog, m.Pack, sha256.Sum256(js)), js)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	otherPack := m
	otherPack.Pack = testPackID
	v2 := m
	v2.V = 2
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)/2] ^= 0x10
	for _, tc := range []struct {
		name   string
		key    []byte
		pack   string
		sealed []byte
		want   error
	}{
		{"wrong catalog key", otherDEK, m.Pack, sealed, crypto.ErrAuth},
		{"stored under another pack", testCatalog, testPackID, sealed, crypto.ErrAuth},
		{"bit flip", testCatalog, m.Pack, flipped, crypto.ErrAuth},
		{"truncated", testCatalog, m.Pack, sealed[:len(sealed)-1], crypto.ErrAuth},
		{"empty", testCatalog, m.Pack, nil, crypto.ErrAuth},
		{"version byte", testCatalog, m.Pack, append([]byte{2}, sealed[1:]...), crypto.ErrUnsupportedVersion},
		{"names another pack inside", testCatalog, m.Pack, seal(otherPack), pack.ErrCorrupt},
		{"version 2", testCatalog, m.Pack, seal(v2), pack.ErrCorrupt},
		{"not JSON", testCatalog, m.Pack, seal(json.RawMessage(`"just a string"`)), pack.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := pack.OpenManifest(tc.key, tc.pack, tc.sealed); !errors.Is(err, tc.want) {
				t.Fatalf("OpenManifest = %v, want %v", err, tc.want)
			}
		})
	}
}

// Items cut from a built pack by their manifest entries open as themselves.
func TestPackItemsOpen(t *testing.T) {
	t.Parallel()
	codec := newCodec(t)
	m, sealedM := sealedManifest(t)
	var items []pack.Item
	for i, e := range m.Items {
		sealed, err := codec.SealItem(testDEK, e.Customer, testClass, e.ID, testMeta(), []byte(fmt.Sprint("record ", i)))
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, pack.Item{ID: e.ID, Customer: e.Customer, Seq: e.Seq, EventTime: e.EventTime, Sealed: sealed})
	}
	b := pack.Build(testClass, items)
	if again, _ := pack.SealManifest(testCatalog, b.Manifest); !bytes.Equal(again, sealedM) {
		t.Fatal("rebuilding the pack gave another manifest")
	}
	for i, e := range b.Manifest.Items {
		_, data, err := codec.OpenItem(testDEK, e.Customer, b.Manifest.Class, e.ID, b.Data[e.Offset:e.Offset+e.Length])
		if err != nil || string(data) != fmt.Sprint("record ", i) {
			t.Fatalf("item %d: %q, %v", i, data, err)
		}
	}
}
