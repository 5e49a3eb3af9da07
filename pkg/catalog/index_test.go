package catalog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// bundle is one test's embedded server and index; the bucket name is fixed, so every test
// gets its own server.
type bundle struct {
	ns    *natstest.Server
	index *catalog.Index
	kms   *keys.LocalKMS
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{ns: natstest.Start(t)}
	var err error
	if b.index, err = catalog.Open(t.Context(), b.ns.JS, 1); err != nil {
		t.Fatal(err)
	}
	if b.kms, err = keys.NewLocalKMS(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *bundle) customer(i int) string {
	return b.kms.Pseudonym("acme", fmt.Sprintf("customer-%d", i))
}

// item is a pack item with stand-in ciphertext: the index never opens items.
type item struct {
	customer string
	seq      uint64
	at       time.Time
}

func (b *bundle) manifest(class string, items ...item) pack.Manifest {
	var in []pack.Item
	for _, it := range items {
		id := b.kms.Pseudonym("item:acme", fmt.Sprintf("ev-%d#0", it.seq))
		in = append(in, pack.Item{ID: id, Customer: it.customer, Seq: it.seq, EventTime: it.at, Sealed: []byte(id)})
	}
	return pack.Build(class, in).Manifest
}

func (b *bundle) commit(t *testing.T, m pack.Manifest, targets ...string) {
	t.Helper()
	if len(targets) == 0 {
		targets = []string{"mem:a", "mem:b"}
	}
	if err := b.index.Commit(t.Context(), m, targets, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
}

// entriesOf returns the entries of m that belong to customer.
func entriesOf(m pack.Manifest, customer string) []pack.Entry {
	var out []pack.Entry
	for _, e := range m.Items {
		if e.Customer == customer {
			out = append(out, e)
		}
	}
	return out
}

func sameEntries(a, b []pack.Entry) bool {
	return slices.EqualFunc(a, b, func(x, y pack.Entry) bool {
		return x.ID == y.ID && x.Customer == y.Customer && x.Seq == y.Seq && x.EventTime.Equal(y.EventTime) &&
			x.Offset == y.Offset && x.Length == y.Length && x.SHA256 == y.SHA256
	})
}

func TestCommitAndPack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	m := b.manifest("critical", item{b.customer(1), 10, t0}, item{b.customer(2), 11, t0.Add(time.Minute)})
	committed := time.Date(2026, 5, 1, 15, 0, 0, 0, time.FixedZone("CEST", 2*3600))
	if err := b.index.Commit(ctx, m, []string{"fs:a", "s3:b"}, committed); err != nil {
		t.Fatal(err)
	}
	rec, err := b.index.Pack(ctx, m.Pack)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Pack != m.Pack || rec.Class != "critical" || rec.Size != m.Size || rec.SHA256 != m.SHA256 || rec.Items != 2 ||
		!slices.Equal(rec.Targets, []string{"fs:a", "s3:b"}) || !rec.NewestEvent.Equal(t0.Add(time.Minute)) {
		t.Fatalf("pack record %+v does not describe manifest %+v", rec, m)
	}
	if !rec.Committed.Equal(committed) || rec.Committed.Location() != time.UTC {
		t.Fatalf("committed %v, want %v in UTC", rec.Committed, committed)
	}
	if _, err := b.index.Pack(ctx, "0123456789abcdef0123456789abcdef"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("Pack of an unknown id = %v, want ErrNotFound", err)
	}
}

func TestEmptyIndex(t *testing.T) {
	t.Parallel()
	b := setup(t)
	packs, err := b.index.Packs(t.Context())
	if err != nil || len(packs) != 0 {
		t.Fatalf("Packs = %v, %v", packs, err)
	}
	recs, err := b.index.Customer(t.Context(), b.customer(1))
	if err != nil || len(recs) != 0 {
		t.Fatalf("Customer = %v, %v", recs, err)
	}
}

// Many customers spread over every shard, some sharing one, across several packs: a query
// returns exactly one customer's items, grouped by pack in pack-id order.
func TestCustomerAcrossShards(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	var customers []string
	for i := range 300 { // more than the 256 shards, so several customers share a shard
		customers = append(customers, b.customer(i))
	}
	// Two customers in one shard whose pseudonyms share more than the shard prefix.
	customers = append(customers, "pab00000000000000000000000000000a", "pab00000000000000000000000000000b")
	seq := uint64(0)
	var manifests []pack.Manifest
	for p := range 3 {
		var items []item
		for i, c := range customers {
			if (i+p)%3 == 0 || i >= 300 { // each customer in one or more packs
				for v := range 1 + i%2 {
					seq++
					items = append(items, item{c, seq, t0.Add(time.Duration(v) * time.Second)})
				}
			}
		}
		m := b.manifest("critical", items...)
		manifests = append(manifests, m)
		b.commit(t, m)
	}
	slices.SortFunc(manifests, func(x, y pack.Manifest) int { return strings.Compare(x.Pack, y.Pack) })

	for _, c := range customers {
		recs, err := b.index.Customer(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		var want []catalog.CustomerRecord
		for _, m := range manifests {
			if es := entriesOf(m, c); len(es) > 0 {
				want = append(want, catalog.CustomerRecord{Pack: m.Pack, Class: m.Class, Items: es})
			}
		}
		if len(recs) != len(want) {
			t.Fatalf("customer %s: %d pack records, want %d", c, len(recs), len(want))
		}
		for i := range recs {
			if recs[i].Pack != want[i].Pack || recs[i].Class != want[i].Class || !sameEntries(recs[i].Items, want[i].Items) {
				t.Fatalf("customer %s, record %d:\n got %+v\nwant %+v", c, i, recs[i], want[i])
			}
		}
	}
	// A customer in no pack, in a shard others use.
	if recs, err := b.index.Customer(ctx, "pab00000000000000000000000000000c"); err != nil || len(recs) != 0 {
		t.Fatalf("unknown customer: %v, %v", recs, err)
	}

	// A pack costs at most one entry per shard, not one per customer.
	kv, err := b.ns.JS.KeyValue(ctx, catalog.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	perPack := map[string]int{}
	for k := range lister.Keys() {
		if rest, ok := strings.CutPrefix(k, "cust."); ok {
			perPack[rest[strings.LastIndexByte(rest, '.')+1:]]++
		}
		for _, c := range customers {
			if strings.Contains(k, c) {
				t.Fatalf("index key %q holds a whole pseudonym", k)
			}
		}
	}
	for id, n := range perPack {
		if n > 256 {
			t.Fatalf("pack %s has %d customer entries", id, n)
		}
	}

	packs, err := b.index.Packs(ctx)
	if err != nil || len(packs) != 3 {
		t.Fatalf("Packs = %d records, %v", len(packs), err)
	}
	for i, p := range packs {
		if p.Pack != manifests[i].Pack {
			t.Fatalf("Packs not in pack-id order: %d is %s, want %s", i, p.Pack, manifests[i].Pack)
		}
	}
}

// The index keeps every version of a record with its exact event time, which is what an
// as-of restore selects on; the index itself has no as-of query.
func TestCustomerKeepsVersionsForAsOf(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.customer(7)
	times := []time.Time{
		t0.Add(123456789 * time.Nanosecond),
		t0.Add(10 * time.Minute).In(time.FixedZone("X", -5*3600)),
		t0.Add(20*time.Minute + time.Nanosecond),
	}
	for i, at := range times {
		b.commit(t, b.manifest("critical", item{c, uint64(100 + i), at}))
	}
	recs, err := b.index.Customer(t.Context(), c)
	if err != nil || len(recs) != 3 {
		t.Fatalf("Customer = %d records, %v", len(recs), err)
	}
	var got []time.Time
	for _, r := range recs {
		for _, e := range r.Items {
			got = append(got, e.EventTime)
		}
	}
	slices.SortFunc(got, time.Time.Compare)
	for i := range times {
		if !got[i].Equal(times[i]) {
			t.Fatalf("version %d at %v, want %v", i, got[i], times[i])
		}
	}
	asOf := t0.Add(15 * time.Minute)
	n := 0
	for _, at := range got {
		if !at.After(asOf) {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d versions at or before %v, want 2", n, asOf)
	}
}

// Indexing a pack again (a redelivered event after a crash) changes nothing a query returns.
func TestCommitIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	c1, c2 := b.customer(1), b.customer(2)
	m := b.manifest("important", item{c1, 1, t0}, item{c2, 2, t0}, item{c1, 3, t0})
	keysNow := func() []string {
		kv, err := b.ns.JS.KeyValue(ctx, catalog.DefaultBucket)
		if err != nil {
			t.Fatal(err)
		}
		l, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ks []string
		for k := range l.Keys() {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}
	b.commit(t, m)
	first, firstKeys := mustCustomer(t, b.index, c1), keysNow()
	for range 3 {
		b.commit(t, m)
	}
	if again := mustCustomer(t, b.index, c1); len(again) != 1 || !sameEntries(again[0].Items, first[0].Items) {
		t.Fatalf("after re-indexing: %+v, want %+v", again, first)
	}
	if got := mustCustomer(t, b.index, c1)[0].Items; len(got) != 2 {
		t.Fatalf("customer 1 has %d items, want 2", len(got))
	}
	if k := keysNow(); !slices.Equal(k, firstKeys) {
		t.Fatalf("keys after re-indexing %v, want %v", k, firstKeys)
	}
	if packs, err := b.index.Packs(ctx); err != nil || len(packs) != 1 || packs[0].Items != 3 {
		t.Fatalf("Packs = %+v, %v", packs, err)
	}
}

func mustCustomer(t *testing.T, ix *catalog.Index, c string) []catalog.CustomerRecord {
	t.Helper()
	recs, err := ix.Customer(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestCommitConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var wg sync.WaitGroup
	errs := make([]error, 20)
	ids := make([]string, 20)
	for i := range 20 {
		m := b.manifest("critical", item{b.customer(i % 4), uint64(i), t0})
		ids[i] = m.Pack
		wg.Go(func() { errs[i] = b.index.Commit(t.Context(), m, []string{"mem:a"}, t0) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
	}
	packs, err := b.index.Packs(t.Context())
	if err != nil || len(packs) != 20 {
		t.Fatalf("Packs = %d, %v", len(packs), err)
	}
	for i := range 4 {
		if recs := mustCustomer(t, b.index, b.customer(i)); len(recs) != 5 {
			t.Fatalf("customer %d in %d packs, want 5", i, len(recs))
		}
	}
}

// A commit that cannot finish does not name the pack: the pack entry is written last.
func TestCommitCancelled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	m := b.manifest("critical", item{b.customer(1), 1, t0})
	if err := b.index.Commit(ctx, m, []string{"mem:a"}, t0); err == nil {
		t.Fatal("Commit with a cancelled context succeeded")
	}
	if _, err := b.index.Pack(t.Context(), m.Pack); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("Pack after a cancelled commit = %v, want ErrNotFound", err)
	}
}

// A committed pack survives a server restart: Commit returns only once entries are stored.
func TestCommitDurableAcrossRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := natstest.StartServer(t, dir, -1)
	port := srv.Addr().(*net.TCPAddr).Port
	connect := func(url string) (*nats.Conn, jetstream.JetStream) {
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return nc, js
	}
	nc, js := connect(srv.ClientURL())
	ix, err := catalog.Open(t.Context(), js, 1)
	if err != nil {
		t.Fatal(err)
	}
	kms, _ := keys.NewLocalKMS(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32))
	b := &bundle{index: ix, kms: kms}
	m := b.manifest("critical", item{b.customer(1), 1, t0}, item{b.customer(2), 2, t0})
	b.commit(t, m)
	nc.Close()
	srv.Shutdown()
	srv.WaitForShutdown()

	srv = natstest.StartServer(t, dir, port) // same store, same port
	_, js = connect(srv.ClientURL())
	ix, err = catalog.Open(t.Context(), js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Pack(t.Context(), m.Pack); err != nil {
		t.Fatalf("pack lost in a restart: %v", err)
	}
	if recs := mustCustomer(t, ix, b.customer(2)); len(recs) != 1 || !sameEntries(recs[0].Items, entriesOf(m, b.customer(2))) {
		t.Fatalf("customer entries after a restart: %+v", recs)
	}
}

// The catalog's record of a customer's items in a pack is encoded without reflection
// (pack.MarshalEntriesRecord); it must stay the JSON of CustomerRecord, which readers decode.
func TestCustomerRecordEncoding(t *testing.T) {
	items := []pack.Entry{{ID: "i1", Customer: "c1", Seq: 7, EventTime: t0, Offset: 10, Length: 20, SHA256: "ab"},
		{ID: "i2", Customer: "c<2>", Seq: 8, EventTime: t0.Add(time.Nanosecond), SHA256: "cd"}}
	for _, its := range [][]pack.Entry{items, items[:1], nil} {
		want, err := json.Marshal(catalog.CustomerRecord{Pack: "p1", Class: "critical", Items: its})
		if err != nil {
			t.Fatal(err)
		}
		got, err := pack.MarshalEntriesRecord("p1", "critical", its)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("got %s (%v), want %s", got, err, want)
		}
	}
}

// A reply the broker never sends (the server that held the request went down) fails Commit
// after the request timeout, not when the caller's longer deadline ends: the worker retries
// the pack instead of holding its events for the whole commit timeout.
func TestCommitUnansweredFailsAtTheRequestTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.index.SetRequestTimeout(300 * time.Millisecond)
	// The bucket's stream is gone and something else takes its subjects without answering.
	if err := b.ns.JS.DeleteStream(t.Context(), "KV_"+catalog.DefaultBucket); err != nil {
		t.Fatal(err)
	}
	sub, err := b.ns.Conn.Subscribe("$KV."+catalog.DefaultBucket+".>", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // the server stops with the test
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	began := time.Now()
	err = b.index.Commit(ctx, b.manifest("critical", item{b.customer(1), 1, t0}), []string{"mem:a"}, t0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Commit with no reply = %v, want a deadline error", err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("Commit with no reply took %s, want about the request timeout", took)
	}
}
