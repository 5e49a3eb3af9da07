package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"

	"github.com/klauspost/compress/zstd"

	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/internal/jsonappend"
	"github.com/custos-dev/custos/pkg/pack"
)

// MaxManifestBytes bounds a task manifest's JSON when it is read back.
const MaxManifestBytes = 1 << 30

// Entry is one record in a task manifest: where its item is, or that it was deleted.
type Entry struct {
	// Customer is the customer's pseudonym; Ref the keyed pseudonym of the record key within it.
	Customer string `json:"customer"`
	Ref      string `json:"ref"`
	// Digest is a keyed digest of the record bytes, so equal contents are found without keeping
	// a plain hash an observer could test guesses against.
	Digest  string `json:"digest,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
	// Pack and Item locate the record's item; it may be in a pack an earlier snapshot stored.
	Pack string     `json:"pack,omitempty"`
	Item pack.Entry `json:"item,omitzero"`
}

// Manifest lists the records one task read.
type Manifest struct {
	V        int     `json:"v"`
	Snapshot string  `json:"snapshot"`
	Class    string  `json:"class"`
	Task     int     `json:"task"`
	Method   string  `json:"method"`
	Entries  []Entry `json:"entries"`
}

// ManifestName is where a task manifest whose sealed bytes have the SHA-256 sum (hex) is stored
// in every target of the class. The sum is in the name because one task can be run twice with
// different results: a worker dies after writing the manifest but before recording the task,
// and the rows change before the task runs again. Each run's manifest then has its own
// create-only name, and the task result names the one that counts. An empty sum gives the name
// without it, which task results that name no manifest refer to.
func ManifestName(snapshot string, task int, sum string) string {
	name := "snapshots/" + snapshot[:2] + "/" + snapshot + "/" + fmt.Sprintf("%06d", task)
	if sum != "" {
		name += "." + sum[:min(len(sum), manifestSumLen)]
	}
	return name
}

// manifestSumLen is how many hex digits of the sum a task manifest's name holds: enough to tell
// the runs of one task apart.
const manifestSumLen = 16

func manifestAAD(snapshot string, task int) []byte {
	return crypto.AAD("custos-snapshot-task", snapshot, strconv.Itoa(task))
}

// Seal sorts m's entries, compresses its JSON with zstd and encrypts it under the catalog key,
// deterministically: sealing the same manifest twice gives the same bytes.
func Seal(catalogKey []byte, m Manifest) ([]byte, error) {
	sort.Slice(m.Entries, func(i, j int) bool {
		a, b := m.Entries[i], m.Entries[j]
		if a.Customer != b.Customer {
			return a.Customer < b.Customer
		}
		return a.Ref < b.Ref
	})
	js, err := marshalManifest(&m)
	if err != nil {
		return nil, fmt.Errorf("snapshot: encode manifest: %w", err)
	}
	// The fastest level: a task's manifest is sealed after its last pack, so its time is the
	// task's; its entries are mostly pseudonyms and digests, which no level compresses much.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return nil, err
	}
	z := enc.EncodeAll(js, nil)
	_ = enc.Close()
	nonce := crypto.DeriveNonce(catalogKey, "snapshot:"+m.Snapshot+"/"+strconv.Itoa(m.Task), sha256.Sum256(z))
	return crypto.Seal(catalogKey, manifestAAD(m.Snapshot, m.Task), nonce, z)
}

// OpenManifest authenticates and decodes the manifest of a snapshot's task.
func OpenManifest(catalogKey []byte, snapshot string, task int, sealed []byte) (Manifest, error) {
	z, err := crypto.Open(catalogKey, manifestAAD(snapshot, task), sealed)
	if err != nil {
		return Manifest{}, err
	}
	dec, err := zstd.NewReader(bytes.NewReader(z), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxManifestBytes))
	if err != nil {
		return Manifest{}, err
	}
	defer dec.Close()
	js, err := io.ReadAll(io.LimitReader(dec, MaxManifestBytes+1))
	if err != nil || len(js) > MaxManifestBytes {
		return Manifest{}, fmt.Errorf("%w: task manifest %s/%d does not decompress", pack.ErrCorrupt, snapshot, task)
	}
	var m Manifest
	if err := json.Unmarshal(js, &m); err != nil || m.V != 1 || m.Snapshot != snapshot || m.Task != task {
		return Manifest{}, fmt.Errorf("%w: task manifest %s/%d", pack.ErrCorrupt, snapshot, task)
	}
	return m, nil
}

// Resolve applies the manifests of a chain, oldest snapshot first, and returns the records live
// in the last one: a full snapshot sets the state of the customers it covers, an incremental
// replaces changed records and drops deleted ones. The result is sorted by customer and ref.
func Resolve(chain [][]Manifest) []Entry {
	state := map[[2]string]Entry{}
	for _, snap := range chain {
		for _, m := range snap {
			for _, e := range m.Entries {
				k := [2]string{e.Customer, e.Ref}
				if e.Deleted {
					delete(state, k)
				} else {
					state[k] = e
				}
			}
		}
	}
	out := make([]Entry, 0, len(state))
	for _, e := range state {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Customer != out[j].Customer {
			return out[i].Customer < out[j].Customer
		}
		return out[i].Ref < out[j].Ref
	})
	return out
}

// marshalManifest is json.Marshal(m), written by hand (internal/jsonappend): a task of 20,000
// records spent 5 % of its CPU encoding its manifest by reflection.
func marshalManifest(m *Manifest) ([]byte, error) {
	a := jsonappend.New(128 + len(m.Entries)*manifestEntrySize)
	a.Raw(`{"v":`)
	a.Int(int64(m.V))
	a.Raw(`,"snapshot":`)
	a.Str(m.Snapshot)
	a.Raw(`,"class":`)
	a.Str(m.Class)
	a.Raw(`,"task":`)
	a.Int(int64(m.Task))
	a.Raw(`,"method":`)
	a.Str(m.Method)
	a.Raw(`,"entries":`)
	if m.Entries == nil {
		a.Raw("null")
	} else {
		a.Raw("[")
		for i := range m.Entries {
			e := &m.Entries[i]
			if i > 0 {
				a.Raw(",")
			}
			a.Raw(`{"customer":`)
			a.Str(e.Customer)
			a.Raw(`,"ref":`)
			a.Str(e.Ref)
			if e.Digest != "" { // omitempty
				a.Raw(`,"digest":`)
				a.Str(e.Digest)
			}
			if e.Deleted { // omitempty
				a.Raw(`,"deleted":true`)
			}
			if e.Pack != "" { // omitempty
				a.Raw(`,"pack":`)
				a.Str(e.Pack)
			}
			if e.Item != (pack.Entry{}) { // omitzero
				a.Raw(`,"item":`)
				pack.AppendEntry(a, &e.Item)
			}
			a.Raw("}")
		}
		a.Raw("]")
	}
	a.Raw("}")
	return a.Bytes(m)
}

// manifestEntrySize is a generous guess of one manifest entry's encoded size.
const manifestEntrySize = 512
