package repository

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/snapshot"
)

// ErrReadOnly is returned by Memory.DataKey: a catalog read from a target restores, it never
// creates keys.
var ErrReadOnly = errors.New("repository: read-only key store")

// Memory is a catalog, key store and snapshot list held in process memory, filled by Rebuild
// from a target. It serves a restore with no broker at all. Keys stay wrapped until asked for.
type Memory struct {
	kms keys.KMS

	mu        sync.Mutex
	packs     map[string]catalog.PackRecord
	byCust    map[string][]catalog.CustomerRecord
	envs      map[string]keys.Envelope
	erased    map[string]bool
	snapshots map[string]snapshot.Snapshot
}

var (
	_ Sink       = (*Memory)(nil)
	_ keys.Store = (*Memory)(nil)
)

// NewMemory returns an empty Memory that unwraps keys with kms.
func NewMemory(kms keys.KMS) *Memory {
	return &Memory{kms: kms, packs: map[string]catalog.PackRecord{}, byCust: map[string][]catalog.CustomerRecord{},
		envs: map[string]keys.Envelope{}, erased: map[string]bool{}, snapshots: map[string]snapshot.Snapshot{}}
}

// Erase implements Sink.
func (m *Memory) Erase(_ context.Context, pseudonym string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.erased[pseudonym] = true
	delete(m.envs, pseudonym)
	return nil
}

// ImportKey implements Sink.
func (m *Memory) ImportKey(_ context.Context, scope string, e keys.Envelope) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.envs[scope]; !ok && !m.erased[scope] {
		m.envs[scope] = e
	}
	return nil
}

// IndexPack implements Sink.
func (m *Memory) IndexPack(_ context.Context, man pack.Manifest, targets []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.packs[man.Pack]; ok {
		return nil
	}
	m.packs[man.Pack] = catalog.PackRecord{Pack: man.Pack, Class: man.Class, Size: man.Size, SHA256: man.SHA256,
		Items: len(man.Items), Targets: targets, NewestEvent: man.NewestEvent}
	by := map[string][]pack.Entry{}
	for _, e := range man.Items {
		by[e.Customer] = append(by[e.Customer], e)
	}
	for c, items := range by {
		m.byCust[c] = append(m.byCust[c], catalog.CustomerRecord{Pack: man.Pack, Class: man.Class, Items: items})
	}
	return nil
}

// PutSnapshot implements Sink.
func (m *Memory) PutSnapshot(_ context.Context, sn snapshot.Snapshot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.snapshots[sn.ID]; !ok {
		m.snapshots[sn.ID] = sn
	}
	return nil
}

// Customer returns a customer's items grouped by pack, in pack-id order.
func (m *Memory) Customer(_ context.Context, pseudonym string) ([]catalog.CustomerRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := append([]catalog.CustomerRecord(nil), m.byCust[pseudonym]...)
	sort.Slice(out, func(i, j int) bool { return out[i].Pack < out[j].Pack })
	return out, nil
}

// Packs returns every pack, ordered by id.
func (m *Memory) Packs(context.Context) ([]catalog.PackRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]catalog.PackRecord, 0, len(m.packs))
	for _, p := range m.packs {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pack < out[j].Pack })
	return out, nil
}

// DataKey implements keys.Store: it never creates a key.
func (m *Memory) DataKey(ctx context.Context, scope string) ([]byte, error) {
	dek, err := m.Lookup(ctx, scope)
	if errors.Is(err, keys.ErrNotFound) {
		return nil, ErrReadOnly
	}
	return dek, err
}

// Lookup implements keys.Store.
func (m *Memory) Lookup(ctx context.Context, scope string) ([]byte, error) {
	m.mu.Lock()
	env, ok := m.envs[scope]
	erased := m.erased[scope]
	m.mu.Unlock()
	if erased {
		return nil, keys.ErrDestroyed
	}
	if !ok {
		return nil, keys.ErrNotFound
	}
	return env.Open(ctx, m.kms, scope)
}

// Destroy implements keys.Store.
func (m *Memory) Destroy(ctx context.Context, scope string) error { return m.Erase(ctx, scope) }

// Snapshot returns a snapshot record.
func (m *Memory) Snapshot(id string) (snapshot.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sn, ok := m.snapshots[id]
	if !ok {
		return sn, fmt.Errorf("%w: snapshot %s", snapshot.ErrNotFound, id)
	}
	return sn, nil
}

// Head returns the newest complete snapshot of a class.
func (m *Memory) Head(class string) (snapshot.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var head snapshot.Snapshot
	for _, sn := range m.snapshots {
		if sn.Class == class && snapshot.IsHead(sn) && (head.ID == "" || sn.Time.After(head.Time)) {
			head = sn
		}
	}
	if head.ID == "" {
		return head, fmt.Errorf("%w: no snapshot of class %q", snapshot.ErrNotFound, class)
	}
	return head, nil
}

// Chain resolves the chain of snapshot id (see snapshot.ChainOf).
func (m *Memory) Chain(id string) ([]snapshot.Snapshot, error) {
	return snapshot.ChainOf(id, m.Snapshot)
}

// Erased returns the erased pseudonyms, sorted.
func (m *Memory) Erased() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedKeys(m.erased)
}

// KVSink feeds a rebuild into the broker's buckets. Entries the broker still holds are kept: a
// key already stored stays, a snapshot record stays, and a pack entry keeps its commit time and
// gains the targets the rebuild found.
type KVSink struct {
	Keys      *keys.KVStore
	Index     *catalog.Index
	Snapshots *snapshot.Store
}

var _ Sink = KVSink{}

// Erase implements Sink.
func (s KVSink) Erase(ctx context.Context, pseudonym string) error {
	return s.Keys.Destroy(ctx, pseudonym)
}

// ImportKey implements Sink.
func (s KVSink) ImportKey(ctx context.Context, scope string, e keys.Envelope) error {
	return s.Keys.Import(ctx, scope, e)
}

// IndexPack implements Sink. A pack the index lacks gets no commit time (zero): RPO and
// retention then count from its newest event, as the time of the rebuild would make every
// backup look fresh and hide an RPO breach.
func (s KVSink) IndexPack(ctx context.Context, m pack.Manifest, targets []string) error {
	var committed time.Time
	rec, err := s.Index.Pack(ctx, m.Pack)
	switch {
	case err == nil:
		committed = rec.Committed
		for _, t := range rec.Targets {
			if !slices.Contains(targets, t) {
				targets = append(targets, t)
			}
		}
		sort.Strings(targets)
	case !errors.Is(err, catalog.ErrNotFound):
		return err
	}
	return s.Index.Commit(ctx, m, targets, committed)
}

// PutSnapshot implements Sink.
func (s KVSink) PutSnapshot(ctx context.Context, sn snapshot.Snapshot) error {
	return s.Snapshots.Put(ctx, sn)
}
