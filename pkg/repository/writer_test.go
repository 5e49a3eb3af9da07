package repository_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/replica"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/faulty"
	"github.com/custos-dev/custos/pkg/target/mem"
)

// memIndex adapts repository.Memory to the Indexer a Writer updates.
type memIndex struct{ *repository.Memory }

func (m memIndex) Commit(ctx context.Context, man pack.Manifest, targets []string, _ time.Time) error {
	return m.IndexPack(ctx, man, targets)
}

// writerBundle is a Writer over three mem targets behind fault injectors, a real repair queue on
// an embedded nats-server, and an in-memory index.
type writerBundle struct {
	kms     *keys.LocalKMS
	keys    *keys.MemStore
	index   *repository.Memory
	queue   *repair.Queue
	faults  []*faulty.Target
	targets []target.Target
	w       *repository.Writer
	codec   *pack.Codec
}

func setupWriter(t *testing.T) *writerBundle {
	t.Helper()
	kms, err := keys.NewLocalKMS(bytes.Repeat([]byte{7}, 32), bytes.Repeat([]byte{8}, 32))
	if err != nil {
		t.Fatal(err)
	}
	b := &writerBundle{kms: kms, keys: keys.NewMemStoreWithKMS(kms), index: repository.NewMemory(kms)}
	ns := natstest.Start(t)
	if b.queue, err = repair.OpenQueue(t.Context(), ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"a", "b", "c"} {
		f := faulty.New(mem.New(mem.WithLabel(l)))
		b.faults = append(b.faults, f)
		b.targets = append(b.targets, f)
	}
	b.w, err = repository.NewWriter(t.Context(), repository.WriterConfig{Keys: b.keys, Fingerprint: kms.Fingerprint(),
		Index: memIndex{b.index}, Repairs: b.queue, Grace: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if b.codec, err = pack.NewCodec(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.codec.Close)
	return b
}

// build seals one item per customer into a pack.
func (b *writerBundle) build(t *testing.T, customers ...string) pack.Built {
	t.Helper()
	var items []pack.Item
	for i, c := range customers {
		p := b.kms.Pseudonym("shop", c)
		dek, err := b.keys.DataKey(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		id := b.kms.Pseudonym("item:shop", c)
		at := time.Date(2026, 12, 1, 0, 0, i, 0, time.UTC)
		sealed, err := b.codec.SealItem(dek, p, "critical", id,
			pack.ItemMeta{Tenant: "shop", CustomerID: c, RecordKey: "k", EventID: "e-" + c, EventTime: at}, []byte("data of "+c))
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, pack.Item{ID: id, Customer: p, Seq: uint64(i + 1), EventTime: at, Sealed: sealed})
	}
	return pack.Build("critical", items)
}

func (b *writerBundle) placement(min int) repository.Placement {
	return repository.Placement{Class: "critical", Targets: b.targets, MinReplicas: min}
}

func TestWritePackThenReadBackWithTheKEKAlone(t *testing.T) {
	b := setupWriter(t)
	built := b.build(t, "c-1", "c-2")
	wr, err := b.w.WritePack(t.Context(), b.placement(0), built.Manifest, built.Sum, replica.BytesSource(built.Data))
	if err != nil {
		t.Fatal(err)
	}
	if len(wr.Targets) != 3 || wr.Missed != 0 {
		t.Fatalf("written = %+v, want 3 targets and none missed", wr)
	}
	// Idempotent: the same pack again writes the same bytes and succeeds.
	if _, err := b.w.WritePack(t.Context(), b.placement(0), built.Manifest, built.Sum, replica.BytesSource(built.Data)); err != nil {
		t.Fatalf("second write of the same pack: %v", err)
	}
	// A reader with only the KMS (no key store) opens the manifest and both customers' keys.
	r := repository.NewReader(repository.NewOpener(b.kms, b.kms.Fingerprint()), b.targets[2])
	m, err := r.Manifest(t.Context(), built.Manifest.Pack)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Keys) != 2 || len(m.Items) != 2 {
		t.Fatalf("manifest holds %d keys and %d items, want 2 and 2", len(m.Keys), len(m.Items))
	}
	for _, e := range m.Items {
		got, err := r.CustomerKey(t.Context(), m.Pack, e.Customer)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := b.keys.Lookup(t.Context(), e.Customer)
		if !bytes.Equal(got, want) {
			t.Fatalf("key of %s read from the target differs from the key store's", e.Customer)
		}
	}
	recs, err := b.index.Packs(t.Context())
	if err != nil || len(recs) != 1 || len(recs[0].Targets) != 3 {
		t.Fatalf("index = %+v, %v; want the pack on 3 targets", recs, err)
	}
}

func TestWritePackQueuesTheTargetThatIsDown(t *testing.T) {
	b := setupWriter(t)
	b.faults[1].Down()
	built := b.build(t, "c-1")
	wr, err := b.w.WritePack(t.Context(), b.placement(2), built.Manifest, built.Sum, replica.BytesSource(built.Data))
	if err != nil {
		t.Fatal(err)
	}
	if wr.Missed != 1 || len(wr.Targets) != 2 {
		t.Fatalf("written = %+v, want 2 targets and 1 missed", wr)
	}
	missing, err := b.queue.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != 1 || missing[0].Target != b.targets[1].Name() || len(missing[0].Objects) != 2 {
		t.Fatalf("repair queue = %+v, want one entry for %s with the pack and its manifest", missing, b.targets[1].Name())
	}
	if missing[0].Objects[0].Name != repository.PackName(built.Manifest.Pack) || missing[0].Objects[1].Name != repository.ManifestName(built.Manifest.Pack) {
		t.Fatalf("repair objects = %+v, want the pack then its manifest", missing[0].Objects)
	}
}

func TestWritePackBelowMinReplicasIndexesNothing(t *testing.T) {
	b := setupWriter(t)
	b.faults[0].Down()
	b.faults[1].Down()
	built := b.build(t, "c-1")
	if _, err := b.w.WritePack(t.Context(), b.placement(2), built.Manifest, built.Sum, replica.BytesSource(built.Data)); err == nil {
		t.Fatal("WritePack succeeded with 1 of 3 targets and 2 required")
	}
	if recs, _ := b.index.Packs(t.Context()); len(recs) != 0 {
		t.Fatalf("index names %d packs after a failed write", len(recs))
	}
	// The target that took the pack holds no manifest: the manifest follows a quorum of packs.
	if _, err := b.targets[2].Stat(t.Context(), repository.ManifestName(built.Manifest.Pack)); !errors.Is(err, target.ErrNotFound) {
		t.Fatalf("manifest stat on the healthy target = %v, want not found", err)
	}
}

func TestManifestOnlyWhereThePackIs(t *testing.T) {
	b := setupWriter(t)
	b.faults[0].FailNextPuts(1) // the pack's Put on target a fails; the manifest's would not
	built := b.build(t, "c-1")
	if _, err := b.w.WritePack(t.Context(), b.placement(2), built.Manifest, built.Sum, replica.BytesSource(built.Data)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.targets[0].Stat(t.Context(), repository.ManifestName(built.Manifest.Pack)); !errors.Is(err, target.ErrNotFound) {
		t.Fatalf("target a holds a manifest for a pack it lacks (stat: %v)", err)
	}
}

func TestRecordsRoundTrip(t *testing.T) {
	b := setupWriter(t)
	p := b.kms.Pseudonym("shop", "gone")
	for range 2 { // a redelivered deletion request writes the same bytes: the second write succeeds
		if _, err := b.w.WriteErasure(t.Context(), repository.Placement{Targets: b.targets, MinReplicas: 1}, p, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)); err != nil {
			t.Fatal(err)
		}
	}
	sn := snapshot.Snapshot{ID: "0123456789abcdef0123456789abcdef", Class: "critical", Method: "full",
		Time: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Cursor: []byte("c")}
	if _, err := b.w.WriteSnapshotRecord(t.Context(), b.placement(0), sn); err != nil {
		t.Fatal(err)
	}
	man := snapshot.Manifest{V: 1, Snapshot: sn.ID, Class: "critical", Task: 3, Method: "full"}
	obj, wr, err := b.w.WriteTaskManifest(t.Context(), b.placement(0), man)
	if err != nil || len(wr.Targets) != 3 {
		t.Fatalf("task manifest: %+v, %v", wr, err)
	}
	r := repository.NewReader(repository.NewOpener(b.kms, b.kms.Fingerprint()), target.Readers(b.targets)...)
	if erased, err := r.Erased(t.Context(), p); err != nil || !erased {
		t.Fatalf("Erased = %v, %v; want true", erased, err)
	}
	if erased, err := r.Erased(t.Context(), b.kms.Pseudonym("shop", "kept")); err != nil || erased {
		t.Fatalf("Erased(kept) = %v, %v; want false", erased, err)
	}
	got, err := r.TaskManifest(t.Context(), sn.ID, snapshot.TaskResult{Task: 3, Manifest: obj})
	if err != nil || got.Task != 3 || got.Snapshot != sn.ID {
		t.Fatalf("task manifest read back = %+v, %v", got, err)
	}
	mem := repository.NewMemory(b.kms)
	rep, err := repository.Rebuild(t.Context(), b.targets[0], target.Readers(b.targets[1:]), repository.NewOpener(b.kms, b.kms.Fingerprint()), mem, repository.RebuildOptions{})
	if err != nil || rep.Snapshots != 1 || rep.Erased != 1 {
		t.Fatalf("rebuild = %+v, %v; want 1 snapshot and 1 erasure", rep, err)
	}
	head, err := mem.Head("critical")
	if err != nil || head.ID != sn.ID {
		t.Fatalf("head = %+v, %v", head, err)
	}
	if _, err := mem.Lookup(t.Context(), p); !errors.Is(err, keys.ErrDestroyed) {
		t.Fatalf("erased customer's key after rebuild: %v, want ErrDestroyed", err)
	}
	// Its sum is what the task result records.
	b2, err := repository.ReadAll(t.Context(), b.targets[1], obj.Name, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if s := sha256.Sum256(b2); len(b2) != int(obj.Size) || hex.EncodeToString(s[:]) != obj.SHA256 {
		t.Fatalf("task manifest object %+v does not match the stored bytes (%d bytes, %x)", obj, len(b2), s)
	}
}

// writeAll writes built to every target with the bundle's writer and returns its manifest as
// the first target holds it.
func (b *writerBundle) writeAll(t *testing.T, built pack.Built) []byte {
	t.Helper()
	if _, err := b.w.WritePack(t.Context(), b.placement(0), built.Manifest, built.Sum, replica.BytesSource(built.Data)); err != nil {
		t.Fatal(err)
	}
	m, err := repository.ReadAll(t.Context(), b.targets[0], repository.ManifestName(built.Manifest.Pack), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// rewrapped is a key store whose envelopes are the store's keys wrapped afresh by the same KMS:
// valid, but other bytes, as after a KEK rotation re-wrapped every key.
type rewrapped struct {
	*keys.MemStore
	kms keys.KMS
}

func (r rewrapped) Envelope(ctx context.Context, scope string) (keys.Envelope, error) {
	dek, err := r.DataKey(ctx, scope)
	if err != nil {
		return keys.Envelope{}, err
	}
	w, err := r.kms.Wrap(ctx, dek, []byte(scope))
	return keys.Envelope{KEK: r.kms.KeyID(), DEK: w}, err
}

// A worker that dies after writing a pack's manifest leaves the pack to be written again. When
// the keys were re-wrapped in between (a KEK rotation), the manifest it seals differs from the
// one the targets hold, though it describes the same pack. The write succeeds: a target's
// manifest that authenticates under the catalog key and lists the same pack, items and
// customers stands; one that does not is still a conflict.
func TestWritePackAfterRewrap(t *testing.T) {
	b := setupWriter(t)
	built := b.build(t, "c-1", "c-2")
	name := repository.ManifestName(built.Manifest.Pack)
	before := b.writeAll(t, built)
	if err := b.faults[2].Delete(t.Context(), name); err != nil { // it died before writing c's
		t.Fatal(err)
	}
	w2, err := repository.NewWriter(t.Context(), repository.WriterConfig{Keys: rewrapped{b.keys, b.kms}, Fingerprint: b.kms.Fingerprint(),
		Index: memIndex{b.index}, Repairs: b.queue, Grace: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wr, err := w2.WritePack(t.Context(), b.placement(0), built.Manifest, built.Sum, replica.BytesSource(built.Data))
	if err != nil || len(wr.Targets) != 3 || wr.Missed != 0 {
		t.Fatalf("write after a rewrap = %+v, %v; want every target", wr, err)
	}
	after, err := repository.ReadAll(t.Context(), b.targets[0], name, 1<<20)
	if err != nil || !bytes.Equal(after, before) {
		t.Errorf("the manifest a target held was replaced (%v)", err)
	}
	for i, tg := range b.targets {
		r := repository.NewReader(repository.NewOpener(b.kms, b.kms.Fingerprint()), tg)
		if m, err := r.Manifest(t.Context(), built.Manifest.Pack); err != nil || len(m.Keys) != 2 || len(m.Items) != 2 {
			t.Errorf("target %d: manifest %+v, %v", i, m, err)
		}
	}

	// Another pack's manifest under this pack's name is no equivalent.
	forged := b.writeAll(t, b.build(t, "c-3"))
	built2 := b.build(t, "c-4")
	name2 := repository.ManifestName(built2.Manifest.Pack)
	for _, f := range b.faults {
		if err := f.Put(t.Context(), name2, bytes.NewReader(forged), int64(len(forged)), target.PutOptions{SHA256: sha256.Sum256(forged)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w2.WritePack(t.Context(), b.placement(0), built2.Manifest, built2.Sum, replica.BytesSource(built2.Data)); !errors.Is(err, replica.ErrConflict) {
		t.Errorf("a pack whose name holds another pack's manifest: %v, want ErrConflict", err)
	}

	// When every target that holds the manifest kept an earlier copy, a target that missed it
	// is queued for repair with those bytes: no target holds the newly sealed ones.
	built3 := b.build(t, "c-5")
	name3 := repository.ManifestName(built3.Manifest.Pack)
	old3 := b.writeAll(t, built3)
	if err := b.faults[2].Delete(t.Context(), name3); err != nil {
		t.Fatal(err)
	}
	b.faults[2].Down()
	wr, err = w2.WritePack(t.Context(), b.placement(2), built3.Manifest, built3.Sum, replica.BytesSource(built3.Data))
	b.faults[2].Up()
	if err != nil || wr.Missed != 1 {
		t.Fatalf("write after a rewrap with a target down = %+v, %v; want one missed", wr, err)
	}
	missing, err := b.queue.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	oldSum := sha256.Sum256(old3)
	found := false
	for _, m := range missing {
		if m.Pack == built3.Manifest.Pack && m.Target == b.targets[2].Name() {
			found = len(m.Objects) == 2 && m.Objects[1].Name == name3 && m.Objects[1].SHA256 == hex.EncodeToString(oldSum[:])
		}
	}
	if !found {
		t.Errorf("repair queue = %+v, want %s's manifest as the other targets hold it", missing, b.targets[2].Name())
	}

	// A catalog record (here an erasure record) written again after the rewrap: the same
	// record with its catalog key wrapped otherwise stands; another record does not.
	p := b.kms.Pseudonym("shop", "c-1")
	at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	if _, err := b.w.WriteErasure(t.Context(), b.placement(0), p, at); err != nil {
		t.Fatal(err)
	}
	if wr, err := w2.WriteErasure(t.Context(), b.placement(0), p, at); err != nil || len(wr.Targets) != 3 {
		t.Errorf("erasure record written again after a rewrap = %+v, %v", wr, err)
	}
	if _, err := w2.WriteErasure(t.Context(), b.placement(0), p, at.Add(time.Second)); !errors.Is(err, replica.ErrConflict) {
		t.Errorf("another erasure record under the same name: %v, want ErrConflict", err)
	}
}
