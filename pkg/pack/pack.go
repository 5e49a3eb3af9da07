package pack

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/custos-dev/custos/pkg/crypto"
)

// CatalogScope is the key-store scope whose data key encrypts manifests.
const CatalogScope = "catalog"

// Item is one sealed item waiting to be packed.
type Item struct {
	ID        string    // keyed item id (design.md section 2)
	Customer  string    // customer pseudonym
	Seq       uint64    // stream sequence of the event that carried it
	EventTime time.Time // producer's event time
	Sealed    []byte    // encrypted item bytes
}

// Entry describes one item inside a pack.
type Entry struct {
	ID        string    `json:"id"`
	Customer  string    `json:"customer"`
	Seq       uint64    `json:"seq"`
	EventTime time.Time `json:"event_time"`
	Offset    int64     `json:"offset"`
	Length    int64     `json:"length"`
	SHA256    string    `json:"sha256"`
}

// Manifest records what a pack holds. It holds no write time, so a pack built twice from the
// same items has identical manifest bytes.
type Manifest struct {
	V           int       `json:"v"`
	Pack        string    `json:"pack"`
	Class       string    `json:"class"`
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	NewestEvent time.Time `json:"newest_event"`
	Items       []Entry   `json:"items"`
	// Keys holds, for every customer with an item in the pack, its data key wrapped by the KEK
	// (docs/design.md section 11), so that the targets alone can be restored from.
	Keys map[string]WrappedKey `json:"keys,omitempty"`
}

// WrappedKey is a data key wrapped by a KEK, as the key store holds it.
type WrappedKey struct {
	KEK string `json:"kek"`
	DEK []byte `json:"dek"`
}

// Customers returns the distinct customer pseudonyms of the manifest's items, sorted.
func (m Manifest) Customers() []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range m.Items {
		if !seen[e.Customer] {
			seen[e.Customer] = true
			out = append(out, e.Customer)
		}
	}
	sort.Strings(out)
	return out
}

// Built is a pack ready to write.
type Built struct {
	Manifest Manifest
	Data     []byte
	Sum      [32]byte
}

// Release hands Data's memory to a later Build and clears Data. Call it only when nothing
// reads Data any more: every write of the pack has returned and none was abandoned while a
// transport could still be sending it. Not calling it is always safe.
func (b *Built) Release() {
	if b.Data == nil {
		return
	}
	d := b.Data[:0]
	b.Data = nil
	if cap(d) > maxPooledPack {
		return
	}
	select {
	case packBufs <- d:
	default: // enough kept
	}
}

// packBufs keeps a few released pack buffers. A pack is several MiB: allocating each afresh
// costs the page faults of zeroing new memory, and the runtime's returning it to the system
// afterwards, every commit (about a tenth of a worker's CPU on the event path). The number kept
// is bounded, so idle memory stays a few packs at most.
var packBufs = make(chan []byte, 4)

// maxPooledPack is the largest buffer kept: twice the default pack size, so that one
// oversized pack does not stay pinned.
const maxPooledPack = 16 << 20

// packBuf returns an empty buffer of at least n bytes, a released one when one is big enough.
func packBuf(n int) []byte {
	select {
	case b := <-packBufs:
		if cap(b) >= n {
			return b
		}
		// Too small for this pack; dropped, so the kept buffers grow with the packs built.
	default:
	}
	return make([]byte, 0, n)
}

// PackID derives the pack id from its item ids in pack order.
func PackID(itemIDs []string) string {
	h := sha256.New()
	h.Write([]byte("custos-pack-v1"))
	for _, id := range itemIDs {
		h.Write([]byte(id))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// ValidID reports whether id has the form of a pack id: 32 lowercase hex digits. Ids read from
// the index (which is not authenticated) must pass it before they name objects.
func ValidID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ObjectName is the name of a pack object. id must be a ValidID.
func ObjectName(packID string) string { return "packs/" + packID[:2] + "/" + packID }

// ManifestName is the name of a pack's manifest object.
func ManifestName(packID string) string { return "manifests/" + packID[:2] + "/" + packID }

// Build orders items by stream sequence and concatenates them. Items with the same id (a
// duplicate delivery inside one batch) are kept once.
func Build(class string, items []Item) Built {
	sorted := make([]Item, 0, len(items))
	seen := make(map[string]bool, len(items))
	for _, it := range items {
		if !seen[it.ID] {
			seen[it.ID] = true
			sorted = append(sorted, it)
		}
	}
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Seq != sorted[j].Seq {
			return sorted[i].Seq < sorted[j].Seq
		}
		return sorted[i].ID < sorted[j].ID
	})
	var size int
	ids := make([]string, len(sorted))
	for i, it := range sorted {
		size += len(it.Sealed)
		ids[i] = it.ID
	}
	b := Built{Data: packBuf(size)}
	m := Manifest{V: 1, Pack: PackID(ids), Class: class, Items: make([]Entry, len(sorted))}
	for i, it := range sorted {
		sum := sha256.Sum256(it.Sealed)
		m.Items[i] = Entry{ID: it.ID, Customer: it.Customer, Seq: it.Seq, EventTime: it.EventTime.UTC(),
			Offset: int64(len(b.Data)), Length: int64(len(it.Sealed)), SHA256: hex.EncodeToString(sum[:])}
		if it.EventTime.After(m.NewestEvent) {
			m.NewestEvent = it.EventTime.UTC()
		}
		b.Data = append(b.Data, it.Sealed...)
	}
	b.Sum = sha256.Sum256(b.Data)
	m.Size = int64(len(b.Data))
	m.SHA256 = hex.EncodeToString(b.Sum[:])
	b.Manifest = m
	return b
}

func manifestAAD(packID string) []byte { return crypto.AAD("custos-manifest", packID) }

// SealManifest encrypts a manifest under the catalog data key, deterministically.
func SealManifest(catalogKey []byte, m Manifest) ([]byte, error) {
	js, err := marshalManifest(&m)
	if err != nil {
		return nil, fmt.Errorf("pack: encode manifest: %w", err)
	}
	nonce := crypto.DeriveNonce(catalogKey, m.Pack, sha256.Sum256(js))
	return crypto.Seal(catalogKey, manifestAAD(m.Pack), nonce, js)
}

// OpenManifest authenticates and decodes a manifest stored for packID.
func OpenManifest(catalogKey []byte, packID string, sealed []byte) (Manifest, error) {
	js, err := crypto.Open(catalogKey, manifestAAD(packID), sealed)
	if err != nil {
		return Manifest{}, err
	}
	var m Manifest
	if err := json.Unmarshal(js, &m); err != nil || m.V != 1 || m.Pack != packID {
		return Manifest{}, fmt.Errorf("%w: manifest %s", ErrCorrupt, packID)
	}
	return m, nil
}
