// Package restore brings customers' records back from the targets: it finds their items in the
// catalog, reads them pack by pack (one ranged read for the wanted items of a pack, from the
// first target whose copy verifies), checks each item's SHA-256 against the manifest,
// authenticates and decrypts every segment, and writes the newest version of each record
// (optionally as of a time), many packs and files at once. It never restores an erased
// customer.
package restore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
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
	// Parallelism bounds the ranged reads in flight (each authenticating and decrypting its
	// items) and, separately, the files being written (default DefaultParallelism()).
	Parallelism int
	// Progress, when set, is called once each item is done (restored or failed), from several
	// goroutines but one call at a time, Items counting up by one.
	Progress func(Progress)

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
	Bytes     int64    // record bytes of the items read and authenticated (replaced versions too)
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
	// Manifests are read and authenticated several at a time; their items keep the order of ids.
	manifests := make([]pack.Manifest, len(ids))
	errs := make([]error, len(ids))
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(1, min(r.parallelism(), len(ids))) {
		wg.Go(func() {
			for i := range next {
				manifests[i], errs[i] = r.repo().Manifest(ctx, ids[i])
			}
		})
	}
	for i := range ids {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	for i, id := range ids {
		if errs[i] != nil {
			rep.Failures = append(rep.Failures, fmt.Sprintf("manifest %s: %v", id, errs[i]))
			continue
		}
		m := manifests[i]
		for _, e := range m.Items {
			items = append(items, located{pack: m.Pack, class: m.Class, entry: e})
		}
	}
	sub, err := r.restore(ctx, items, opts)
	sub.Failures = append(rep.Failures, sub.Failures...)
	sub.Unindexed = rep.Unindexed
	return sub, err
}

// restore selects the items to read (as of opts.AsOf, one copy per item id), fetches the data
// keys of their customers once, and reads and writes them (run.go). rep is a named result so
// that the deferred copy of the skipped replicas reaches the caller.
func (r *Restorer) restore(ctx context.Context, items []located, opts Options) (rep Report, err error) {
	// One copy per item id: a duplicate delivery may have stored an item twice.
	seen := map[string]bool{}
	var jobs []*job
	for _, it := range items {
		if !opts.AsOf.IsZero() && it.entry.EventTime.After(opts.AsOf) {
			continue
		}
		if !seen[it.entry.ID] {
			seen[it.entry.ID] = true
			// idx breaks ties of event time and sequence: the later candidate wins, as a stable
			// sort and writing in order did (design.md section 7).
			jobs = append(jobs, &job{located: it, idx: len(jobs)})
		}
	}
	defer func() {
		for _, b := range r.repo().TakeSkipped() {
			rep.Skipped = append(rep.Skipped, b.String())
		}
	}()
	deks, err := r.customerKeys(ctx, jobs, &rep)
	if err != nil {
		return rep, err
	}
	todo := jobs[:0]
	for _, j := range jobs {
		if j.dek = deks[j.entry.Customer]; j.dek != nil {
			todo = append(todo, j)
		}
	}
	sort.Strings(rep.Erased)
	ru := newRun(r, opts.Out, todo)
	err = ru.execute(ctx, todo)
	ru.report(&rep)
	if err == nil {
		err = ctx.Err()
	}
	return rep, err
}

// customerKeys returns the data key of every customer of jobs, fetched once each (in bulk when
// the key store allows). A customer whose items must be skipped has no key: erased (added to
// rep.Erased), or not restorable (added to rep.Failures). An error stops the restore.
func (r *Restorer) customerKeys(ctx context.Context, jobs []*job, rep *Report) (map[string][]byte, error) {
	firstPack := map[string]string{} // a pack holding an item of the customer, for its manifest
	var customers []string
	for _, j := range jobs {
		if _, ok := firstPack[j.entry.Customer]; !ok {
			firstPack[j.entry.Customer] = j.pack
			customers = append(customers, j.entry.Customer)
		}
	}
	sort.Strings(customers)
	found, err := keys.LookupMany(ctx, r.Keys, customers, r.parallelism())
	if err != nil {
		return nil, fmt.Errorf("restore: data keys: %w", err)
	}
	deks := make(map[string][]byte, len(customers))
	for i, c := range customers {
		dek, err := r.customerKey(ctx, c, firstPack[c], found[i], rep)
		if err != nil {
			return nil, err
		}
		deks[c] = dek
	}
	return deks, nil
}

// customerKey returns a customer's data key given the key store's answer, or nil when its
// items must be skipped: erased (added to rep.Erased), or not restorable (added to
// rep.Failures). An error stops the restore.
func (r *Restorer) customerKey(ctx context.Context, c, packID string, f keys.Found, rep *Report) ([]byte, error) {
	dek, err := f.Key, f.Err
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
