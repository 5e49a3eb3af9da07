// Package restore brings customers' records back from the targets: it finds their items in the
// catalog, reads each from the first target that has it, checks its SHA-256 against the
// manifest, authenticates and decrypts every segment, and writes the newest version of each
// record (optionally as of a time). It never restores an erased customer.
package restore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/target"
)

// ErrChecksum means an item's bytes differ from its manifest in every target.
var ErrChecksum = errors.New("restore: checksum mismatch")

// Catalog is the part of the index a restore reads: the broker's index (catalog.Index) or one
// read from a target (repository.Memory).
type Catalog interface {
	Customer(ctx context.Context, pseudonym string) ([]catalog.CustomerRecord, error)
	Packs(ctx context.Context) ([]catalog.PackRecord, error)
}

// Restorer restores from an index and a set of targets tried in order.
type Restorer struct {
	Index   Catalog
	Targets []target.Reader
	// Keys gives customers' data keys (Lookup only). When it lacks a key, the key is read from
	// the manifest of a pack holding the item; when it says destroyed, an erasure record in a
	// target must confirm it (docs/design.md section 11).
	Keys keys.Store
	// Repo reads manifests, erasure records and keys from Targets.
	Repo       *repository.Reader
	Pseudonyms keys.Pseudonymizer
	Logger     *slog.Logger
	// Progress, when set, is called after each item.
	Progress func(done, total int)

	once sync.Once
}

// repo returns Repo, or a reader over Targets that opens catalog objects with Pseudonyms when it
// is also the KMS (the key file's LocalKMS is both).
func (r *Restorer) repo() *repository.Reader {
	r.once.Do(func() {
		if r.Repo != nil {
			return
		}
		kms, _ := r.Pseudonyms.(keys.KMS)
		r.Repo = repository.NewReader(repository.NewOpener(kms, r.Pseudonyms.Fingerprint(), r.Targets...), r.Targets...)
	})
	return r.Repo
}

// Options select what to restore.
type Options struct {
	// Out is the directory records are written to, as Out/<tenant>/<customer>/<record key>.
	Out string
	// AsOf, when set, restores each record as it was at that time (by event time).
	AsOf time.Time
}

// Report says what a restore did.
type Report struct {
	Customers int      // customers with at least one record restored
	Records   int      // records written
	Items     int      // items read and authenticated
	Bytes     int64    // record bytes written
	Erased    []string // pseudonyms of erased customers that were skipped
	Failures  []string // items that could not be restored from any target
	// Skipped names every replica passed over because it was missing or failed a check, while
	// another target's copy served: "target: object: reason".
	Skipped []string
	// Recovered names customers whose data key was missing from the key store and was read
	// from the targets.
	Recovered []string
	// Unindexed names packs the targets hold but the index does not (restored all the same):
	// run custos catalog rebuild.
	Unindexed []string
}

// OK reports whether everything asked for was restored and verified.
func (r Report) OK() bool { return len(r.Failures) == 0 }

type located struct {
	pack  string
	class string
	entry pack.Entry
}

// Customer restores one customer's records.
func (r *Restorer) Customer(ctx context.Context, tenant, customerID string, opts Options) (Report, error) {
	if err := r.repo().CheckKey(ctx); err != nil {
		return Report{}, err
	}
	pseudo := r.Pseudonyms.Pseudonym(tenant, customerID)
	recs, err := r.Index.Customer(ctx, pseudo)
	if err != nil {
		return Report{}, err
	}
	var items []located
	for _, rec := range recs {
		for _, e := range rec.Items {
			items = append(items, located{pack: rec.Pack, class: rec.Class, entry: e})
		}
	}
	return r.restore(ctx, items, opts)
}

// Items restores the given items only (a restore drill's sample, package drill), read and
// checked as Customer and All do.
func (r *Restorer) Items(ctx context.Context, recs []catalog.CustomerRecord, opts Options) (Report, error) {
	if err := r.repo().CheckKey(ctx); err != nil {
		return Report{}, err
	}
	var items []located
	for _, rec := range recs {
		for _, e := range rec.Items {
			items = append(items, located{pack: rec.Pack, class: rec.Class, entry: e})
		}
	}
	return r.restore(ctx, items, opts)
}

// All restores every customer in the catalog. Manifests are read from the targets and
// authenticated, so the index only says which packs exist.
func (r *Restorer) All(ctx context.Context, opts Options) (Report, error) {
	if err := r.repo().CheckKey(ctx); err != nil {
		return Report{}, err
	}
	packs, err := r.Index.Packs(ctx)
	if err != nil {
		return Report{}, err
	}
	var items []located
	var rep Report
	// The targets are the record: a pack whose index entry was lost is restored all the same,
	// and named, so that the index can be rebuilt.
	ids := make([]string, 0, len(packs))
	indexed := make(map[string]bool, len(packs))
	for _, p := range packs {
		ids = append(ids, p.Pack)
		indexed[p.Pack] = true
	}
	stored, err := r.repo().PackIDs(ctx)
	if err != nil {
		return Report{}, err
	}
	for _, id := range stored {
		if !indexed[id] {
			ids = append(ids, id)
			rep.Unindexed = append(rep.Unindexed, id)
		}
	}
	for _, id := range ids {
		m, err := r.repo().Manifest(ctx, id)
		if err != nil {
			rep.Failures = append(rep.Failures, fmt.Sprintf("manifest %s: %v", id, err))
			continue
		}
		for _, e := range m.Items {
			items = append(items, located{pack: m.Pack, class: m.Class, entry: e})
		}
	}
	sub, err := r.restore(ctx, items, opts)
	sub.Failures = append(rep.Failures, sub.Failures...)
	sub.Unindexed = rep.Unindexed
	return sub, err
}

// restore reads items oldest first so the newest version of each record is written last.
// rep is a named result so that the deferred copy of the skipped replicas reaches the caller.
func (r *Restorer) restore(ctx context.Context, items []located, opts Options) (rep Report, err error) {
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// One copy per item id: a duplicate delivery may have stored an item twice.
	seen := map[string]bool{}
	kept := items[:0]
	for _, it := range items {
		if !opts.AsOf.IsZero() && it.entry.EventTime.After(opts.AsOf) {
			continue
		}
		if !seen[it.entry.ID] {
			seen[it.entry.ID] = true
			kept = append(kept, it)
		}
	}
	items = kept
	// The newest version by event time wins, ties broken by stream sequence (design.md section
	// 7): "as of T" means the state the producer's changes describe at T, also when events about
	// one record arrive out of order (a backfill, a retried publish).
	sort.SliceStable(items, func(i, j int) bool {
		a, b := items[i].entry, items[j].entry
		if !a.EventTime.Equal(b.EventTime) {
			return a.EventTime.Before(b.EventTime)
		}
		return a.Seq < b.Seq
	})
	deks := map[string][]byte{}
	erased := map[string]bool{} // erased, or not restorable as a whole: skip its items
	customers := map[string]bool{}
	records := map[string]bool{}
	defer func() {
		for _, b := range r.repo().TakeSkipped() {
			rep.Skipped = append(rep.Skipped, b.String())
		}
	}()
	for i, it := range items {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		c := it.entry.Customer
		if erased[c] {
			continue
		}
		dek, ok := deks[c]
		if !ok {
			var err error
			dek, err = r.customerKey(ctx, c, it.pack, &rep)
			if err != nil {
				return rep, err
			}
			if dek == nil {
				erased[c] = true
				continue
			}
			deks[c] = dek
		}
		meta, n, err := r.item(ctx, dek, it, opts.Out)
		if err != nil {
			log.Error("item not restored", "pack", it.pack, "item", it.entry.ID, "err", err)
			rep.Failures = append(rep.Failures, fmt.Sprintf("item %s in pack %s: %v", it.entry.ID, it.pack, err))
			continue
		}
		rep.Items++
		customers[c] = true
		key := meta.Tenant + "\x00" + meta.CustomerID + "\x00" + meta.RecordKey
		if !records[key] {
			records[key] = true
			rep.Records++
		}
		rep.Bytes += n
		if r.Progress != nil {
			r.Progress(i+1, len(items))
		}
	}
	rep.Customers = len(customers)
	sort.Strings(rep.Erased)
	return rep, nil
}

// customerKey returns a customer's data key, or nil when its items must be skipped: erased
// (added to rep.Erased), or not restorable (added to rep.Failures). An error stops the restore.
func (r *Restorer) customerKey(ctx context.Context, c, packID string, rep *Report) ([]byte, error) {
	dek, err := r.Keys.Lookup(ctx, c)
	switch {
	case err == nil:
		return dek, nil
	case errors.Is(err, keys.ErrDestroyed):
		erased, eerr := r.repo().Erased(ctx, c)
		switch {
		case erased:
			rep.Erased = append(rep.Erased, c)
		case eerr != nil:
			rep.Failures = append(rep.Failures, fmt.Sprintf("customer %s: marked destroyed in the key store, and no target answered to confirm the erasure: %v", c, eerr))
		default:
			rep.Failures = append(rep.Failures, fmt.Sprintf("customer %s: marked destroyed in the key store, but no target holds an erasure record (the key store was altered?); not restored", c))
		}
		return nil, nil
	case errors.Is(err, keys.ErrNotFound):
		// An erased customer whose key entry was purged stays erased.
		if erased, _ := r.repo().Erased(ctx, c); erased {
			rep.Erased = append(rep.Erased, c)
			return nil, nil
		}
		dek, err := r.repo().CustomerKey(ctx, packID, c)
		if err != nil {
			rep.Failures = append(rep.Failures, fmt.Sprintf("customer %s: data key missing from the key store and not readable from the targets: %v", c, err))
			return nil, nil
		}
		rep.Recovered = append(rep.Recovered, c)
		return dek, nil
	default:
		return nil, fmt.Errorf("restore: data key of %s: %w", c, err)
	}
}

// item restores one item from the first target whose copy verifies; the copies passed over are
// recorded in the Reader's skipped list.
func (r *Restorer) item(ctx context.Context, dek []byte, it located, out string) (pack.ItemMeta, int64, error) {
	// The index is not authenticated: check the id before it names an object.
	if !pack.ValidID(it.pack) {
		return pack.ItemMeta{}, 0, fmt.Errorf("malformed pack id %q in the index", it.pack)
	}
	var errs []error
	var failed []repository.Bad
	for _, t := range r.Targets {
		meta, n, err := r.itemFrom(ctx, t, dek, it, out)
		if err == nil {
			for _, b := range failed {
				r.repo().Skip(b.Target, b.Object, b.Err)
			}
			return meta, n, nil
		}
		failed = append(failed, repository.Bad{Target: t.Name(), Object: repository.PackName(it.pack) + " item " + it.entry.ID, Err: err})
		errs = append(errs, fmt.Errorf("%s: %w", t.Name(), err))
	}
	return pack.ItemMeta{}, 0, errors.Join(errs...)
}

func (r *Restorer) itemFrom(ctx context.Context, t target.Reader, dek []byte, it located, out string) (pack.ItemMeta, int64, error) {
	rc, err := t.GetRange(ctx, repository.PackName(it.pack), it.entry.Offset, it.entry.Length)
	if err != nil {
		return pack.ItemMeta{}, 0, err
	}
	defer rc.Close()
	h := sha256.New()
	counted := &hashingReader{r: rc, h: h}
	ir, err := pack.OpenItemStream(counted, dek, it.entry.Customer, it.class, it.entry.ID)
	if err != nil {
		return pack.ItemMeta{}, 0, err
	}
	defer ir.Close()
	dst := Path(out, ir.Meta.Tenant, ir.Meta.CustomerID, ir.Meta.RecordKey)
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return pack.ItemMeta{}, 0, err
	}
	tmp, err := os.CreateTemp(dir, ".restore-*")
	if err != nil {
		return pack.ItemMeta{}, 0, err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, ir)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return pack.ItemMeta{}, 0, err
	}
	// Drain so that the checksum covers every byte of the stored item.
	if _, err := io.Copy(io.Discard, counted); err != nil {
		return pack.ItemMeta{}, 0, err
	}
	if counted.n != it.entry.Length || hex.EncodeToString(h.Sum(nil)) != it.entry.SHA256 {
		return pack.ItemMeta{}, 0, ErrChecksum
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return pack.ItemMeta{}, 0, err
	}
	return ir.Meta, n, nil
}

type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.n += int64(n)
	h.h.Write(p[:n])
	return n, err
}

// Path is where a restored record is written: out/<tenant>/<customer>/<record key>, each part
// escaped into a single path element.
func Path(out, tenant, customerID, recordKey string) string {
	return filepath.Join(out, escape(tenant), escape(customerID), escape(recordKey))
}

// escape makes one path element from any string: slashes and dot-names cannot escape out.
func escape(s string) string {
	e := url.PathEscape(s)
	if e == "" || e == "." || e == ".." {
		return "%" + hex.EncodeToString([]byte(s)) + "_"
	}
	return e
}

// Snapshot restores the state a committed snapshot describes (docs/design.md section 10): the
// records of its chain, the full snapshot first and then each incremental, with deleted records
// dropped. chain is what snapshot.Store.Chain returns. customer, when set, is the pseudonym of
// the only customer to restore. Task manifests are read from the targets, checked against the
// checksum the snapshot recorded and authenticated.
func (r *Restorer) Snapshot(ctx context.Context, chain []snapshot.Snapshot, customer string, opts Options) (Report, error) {
	if len(chain) == 0 {
		return Report{}, errors.New("restore: empty snapshot chain")
	}
	if err := r.repo().CheckKey(ctx); err != nil {
		return Report{}, err
	}
	var rep Report
	all := make([][]snapshot.Manifest, 0, len(chain))
	for _, sn := range chain {
		ms := make([]snapshot.Manifest, 0, len(sn.Tasks))
		for _, t := range sn.Tasks {
			m, err := r.repo().TaskManifest(ctx, sn.ID, t)
			if err != nil {
				// A snapshot missing a task cannot be restored exactly: say so and stop.
				return rep, fmt.Errorf("restore: snapshot %s task %d: %w", sn.ID, t.Task, err)
			}
			ms = append(ms, m)
		}
		all = append(all, ms)
	}
	class := chain[len(chain)-1].Class
	var items []located
	for _, e := range snapshot.Resolve(all) {
		if customer != "" && e.Customer != customer {
			continue
		}
		items = append(items, located{pack: e.Pack, class: class, entry: e.Item})
	}
	opts.AsOf = time.Time{} // the snapshot chooses the versions
	return r.restore(ctx, items, opts)
}
