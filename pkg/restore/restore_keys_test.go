package restore_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/restore"
)

// Restores when the key store is damaged (docs/design.md section 11): the targets hold every
// wrapped data key and every erasure record, and they decide.

// lacking is a key store that has lost some scopes (purged, or rebuilt from an older target).
type lacking struct {
	keys.Store
	lost []string
}

func (l lacking) Lookup(ctx context.Context, scope string) ([]byte, error) {
	if slices.Contains(l.lost, scope) {
		return nil, keys.ErrNotFound
	}
	return l.Store.Lookup(ctx, scope)
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

// A key missing from the key store is read from the manifest of a pack that holds the item,
// and the records come back byte for byte.
func TestKeyMissingFromStore(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := []record{
		rec("alice", "profile", `{"name":"Alice"}`, t0),
		rec("alice", "export", randomData(7, 2*70_000+3), t0.Add(time.Second)),
	}
	bob := rec("bob", "profile", "bob", t0)
	b.backup(t, "critical", alice[0], bob)
	b.backup(t, "important", alice[1])
	pa, pb := b.kms.Pseudonym("shop", "alice"), b.kms.Pseudonym("shop", "bob")

	for _, tc := range []struct {
		name      string
		store     keys.Store
		recovered []string // by All
	}{
		{"one customer lost", lacking{b.keys, []string{pa}}, []string{pa}},
		{"empty store", keys.NewMemStore(), []string{pa, pb}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := b.restorer()
			r.Keys = tc.store
			out := t.TempDir()
			rep, err := r.Customer(t.Context(), "shop", "alice", restore.Options{Out: out})
			if err != nil || !rep.OK() || rep.Items != 2 || !slices.Equal(rep.Recovered, []string{pa}) || len(rep.Erased) != 0 {
				t.Fatalf("Customer: %+v, %v", rep, err)
			}
			checkFiles(t, out, want(out, alice...))

			r = b.restorer()
			r.Keys = tc.store
			out = t.TempDir()
			rep, err = r.All(t.Context(), restore.Options{Out: out})
			if err != nil || !rep.OK() || rep.Items != 3 || !slices.Equal(sorted(rep.Recovered), sorted(tc.recovered)) {
				t.Fatalf("All: %+v, %v", rep, err)
			}
			checkFiles(t, out, want(out, append(slices.Clone(alice), bob)...))
		})
	}

	// With the key lost and no readable manifest holding it, the customer is a failure.
	t.Run("manifest unreadable", func(t *testing.T) {
		p := b.backup(t, "critical", rec("carol", "k", "c", t0))
		for _, f := range b.faults {
			f.Corrupt(pack.ManifestName(p.Manifest.Pack))
		}
		pc := b.kms.Pseudonym("shop", "carol")
		r := b.restorer()
		r.Keys = lacking{b.keys, []string{pc}}
		out := t.TempDir()
		rep, err := r.Customer(t.Context(), "shop", "carol", restore.Options{Out: out})
		if err != nil || rep.OK() || rep.Items != 0 || len(rep.Recovered) != 0 ||
			len(rep.Failures) != 1 || !strings.Contains(rep.Failures[0], pc) {
			t.Fatalf("Customer: %+v, %v", rep, err)
		}
		checkFiles(t, out, nil)
	})
}

// A key purged from the NATS key bucket, read by another process (the CLI), is recovered from
// the manifests.
func TestKeyPurgedFromKV(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	writer, err := keys.NewKVStore(ctx, b.ns.JS, b.kms)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = writer.Close() })
	b.useKeys(t, writer)
	alice, bob := rec("alice", "k", randomData(9, 1000), t0), rec("bob", "k", "bob", t0)
	b.backup(t, "critical", alice, bob)
	pa := b.kms.Pseudonym("shop", "alice")

	kv, err := b.ns.JS.KeyValue(ctx, keys.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, pa); err != nil {
		t.Fatal(err)
	}
	reader, err := keys.NewKVStore(ctx, b.ns.JS, b.kms)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reader.Close() })
	if _, err := reader.Lookup(ctx, pa); !errors.Is(err, keys.ErrNotFound) {
		t.Fatalf("Lookup of the purged key = %v, want ErrNotFound", err)
	}

	r := b.restorer()
	r.Keys = reader
	out := t.TempDir()
	rep, err := r.All(ctx, restore.Options{Out: out})
	if err != nil || !rep.OK() || rep.Items != 2 || !slices.Equal(rep.Recovered, []string{pa}) {
		t.Fatalf("All: %+v, %v", rep, err)
	}
	checkFiles(t, out, want(out, alice, bob))
}

// A key marked destroyed that no target confirms with an erasure record is tampering, not an
// erasure: the customer is not restored, and the restore fails naming it.
func TestDestroyedWithoutErasureRecord(t *testing.T) {
	t.Parallel()
	b := setup(t)
	keep := rec("keep", "k", "kept", t0)
	b.backup(t, "critical", keep, rec("alice", "k", "secret", t0), rec("alice", "k2", "secret", t0))
	pa := b.kms.Pseudonym("shop", "alice")
	other := b.kms.Pseudonym("shop", "keep")

	for _, tc := range []struct {
		name  string
		forge func(t *testing.T) // what the targets hold under alice's erasure record name
		skips int                // replicas the restore must name as passed over
	}{
		{"no record", func(*testing.T) {}, 0},
		{"another customer's record under the name", func(t *testing.T) {
			sealed, err := b.sealer.Erasure(other, t0)
			if err != nil {
				t.Fatal(err)
			}
			put(t, b.targets[1], repository.ErasureName(pa), sealed)
		}, 1},
		{"garbage under the name", func(t *testing.T) {
			replace(t, b.targets[1], repository.ErasureName(pa), []byte("CUSTOSC1 not really"))
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.forge(t)
			if err := b.keys.Destroy(t.Context(), pa); err != nil {
				t.Fatal(err)
			}
			for _, all := range []bool{true, false} {
				out := t.TempDir()
				var rep restore.Report
				var err error
				if all {
					rep, err = b.restorer().All(t.Context(), restore.Options{Out: out})
				} else {
					rep, err = b.restorer().Customer(t.Context(), "shop", "alice", restore.Options{Out: out})
				}
				if err != nil || rep.OK() || len(rep.Erased) != 0 || len(rep.Failures) != 1 ||
					!strings.Contains(rep.Failures[0], pa) || !strings.Contains(rep.Failures[0], "no target holds an erasure record") {
					t.Fatalf("all=%v: %+v, %v", all, rep, err)
				}
				if len(rep.Skipped) != tc.skips || (tc.skips > 0 && !strings.Contains(rep.Skipped[0], repository.ErasureName(pa))) {
					t.Errorf("all=%v: skipped %q, want %d naming the erasure record", all, rep.Skipped, tc.skips)
				}
				if all {
					checkFiles(t, out, want(out, keep))
				} else {
					checkFiles(t, out, nil)
				}
			}
		})
	}
}

// A key marked destroyed and confirmed by an erasure record in any one target is an erasure.
// So is a key purged from the store whose erasure record a target holds.
func TestDestroyedWithErasureRecord(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		on     []int // targets holding the record
		purged bool  // the key store lost the key as well as the marker
	}{
		{"record on every target", nil, false},
		{"record only on the last target", []int{2}, false},
		{"record only on the last target, key purged", []int{2}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			keep := rec("keep", "k", "kept", t0)
			b.backup(t, "critical", keep, rec("alice", "k", "erased", t0))
			pa := b.erase(t, "alice", tc.on...)
			for _, all := range []bool{true, false} {
				r := b.restorer()
				if tc.purged {
					r.Keys = lacking{r.Keys, []string{pa}}
				}
				out := t.TempDir()
				var rep restore.Report
				var err error
				if all {
					rep, err = r.All(t.Context(), restore.Options{Out: out})
				} else {
					rep, err = r.Customer(t.Context(), "shop", "alice", restore.Options{Out: out})
				}
				if err != nil || !rep.OK() || !slices.Equal(rep.Erased, []string{pa}) || len(rep.Recovered) != 0 {
					t.Fatalf("all=%v: %+v, %v", all, rep, err)
				}
				if all {
					checkFiles(t, out, want(out, keep))
				} else {
					checkFiles(t, out, nil)
				}
			}
		})
	}
}

// A replica passed over while another target's copy serves is named in the report.
func TestSkippedReplicaNamed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	recs := []record{rec("alice", "k", "one", t0), rec("bob", "k", "two", t0)}
	p := b.backup(t, "critical", recs...)
	packName, manName := pack.ObjectName(p.Manifest.Pack), pack.ManifestName(p.Manifest.Pack)

	out := t.TempDir()
	rep, err := b.restorer().All(t.Context(), restore.Options{Out: out})
	if err != nil || !rep.OK() || len(rep.Skipped) != 0 {
		t.Fatalf("nothing damaged: %+v, %v", rep, err)
	}

	b.faults[0].Corrupt(packName)
	out = t.TempDir()
	rep, err = b.restorer().Customer(t.Context(), "shop", "bob", restore.Options{Out: out})
	if err != nil || !rep.OK() || rep.Items != 1 || len(rep.Skipped) != 1 ||
		!strings.HasPrefix(rep.Skipped[0], b.targets[0].Name()+": "+packName+" item "+p.Manifest.Items[1].ID) {
		t.Fatalf("corrupt pack on target 0: %+v, %v", rep, err)
	}
	checkFiles(t, out, want(out, recs[1]))

	// A pack is read once: damage every item of the stored copy, not only the first one read.
	b.faults[0].Reset()
	flipItems(t, b, 0, p)
	b.faults[0].Corrupt(manName)
	out = t.TempDir()
	rep, err = b.restorer().All(t.Context(), restore.Options{Out: out})
	if err != nil || !rep.OK() || rep.Items != 2 || len(rep.Skipped) != 3 {
		t.Fatalf("corrupt pack and manifest on target 0: %+v, %v", rep, err)
	}
	if !strings.HasPrefix(rep.Skipped[0], b.targets[0].Name()+": "+manName+": ") {
		t.Errorf("skipped %q, want the manifest on %s first", rep.Skipped, b.targets[0].Name())
	}
	for _, s := range rep.Skipped[1:] {
		if !strings.HasPrefix(s, b.targets[0].Name()+": "+packName+" item ") {
			t.Errorf("skipped %q, want an item of %s on %s", s, packName, b.targets[0].Name())
		}
	}
	checkFiles(t, out, want(out, recs...))
}

// A restore with another key file stops with an error, never an empty success: with another
// pseudonym key it would find no customer, with another KEK it could open nothing.
func TestWrongKeyFile(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.backup(t, "critical", rec("alice", "k", "v", t0))
	other := func(b byte) []byte { return []byte(strings.Repeat(string(rune(b)), 32)) }
	for _, tc := range []struct {
		name             string
		kek, pseudonymKy []byte
		want             error
	}{
		{"another pseudonym key", testKEK, other(9), repository.ErrKeyMismatch},
		{"another KEK", other(8), testPseudonymKey, keys.ErrUnwrap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kms, err := keys.NewLocalKMS(tc.kek, tc.pseudonymKy)
			if err != nil {
				t.Fatal(err)
			}
			r := b.restorer()
			r.Pseudonyms = kms
			out := t.TempDir()
			if rep, err := r.Customer(t.Context(), "shop", "alice", restore.Options{Out: out}); !errors.Is(err, tc.want) {
				t.Errorf("Customer = %+v, %v; want %v", rep, err, tc.want)
			}
			if rep, err := r.All(t.Context(), restore.Options{Out: out}); !errors.Is(err, tc.want) {
				t.Errorf("All = %+v, %v; want %v", rep, err, tc.want)
			}
			checkFiles(t, out, nil)
		})
	}
}

// One manifest whose every copy is damaged is reported; it does not stop the restore of the
// other packs, whichever manifest the key-file check meets first.
func TestDamagedManifestEverywhere(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r1, r2 := rec("alice", "k", "one", t0), rec("bob", "k", "two", t0)
	p1, p2 := b.backup(t, "critical", r1), b.backup(t, "critical", r2)
	bad, good := p1, r2
	if p2.Manifest.Pack < p1.Manifest.Pack { // damage the manifest listed first
		bad, good = p2, r1
	}
	for _, f := range b.faults {
		f.Corrupt(pack.ManifestName(bad.Manifest.Pack))
	}
	out := t.TempDir()
	rep, err := b.restorer().All(t.Context(), restore.Options{Out: out})
	if err != nil || rep.OK() || rep.Items != 1 || len(rep.Failures) != 1 ||
		!strings.Contains(rep.Failures[0], "manifest "+bad.Manifest.Pack) {
		t.Fatalf("All: %+v, %v", rep, err)
	}
	checkFiles(t, out, want(out, good))
}
