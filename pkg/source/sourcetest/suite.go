// Package sourcetest is the conformance suite every source connector runs against a real system
// (a PostgreSQL server, an HTTP export server). A test whose system cannot be reached must fail,
// never skip.
//
// What it pins down, beyond the contract in package source:
//
//   - A full snapshot yields exactly the live records, each once, with the tenant, customer and
//     key the harness expects; Cursor fails before io.EOF and works after it.
//   - With nothing written in between, an incremental snapshot yields nothing; after updates,
//     inserts and deletes it yields exactly the changed records (and tombstones for the deleted
//     ones when the source reports deletions, nothing for them otherwise).
//   - Snapshots of the ranges from source.Ranges (or the source's Splitter) together yield every
//     record exactly once.
//   - Records written while a full snapshot is being read are in it or in the next incremental:
//     replaying both in order gives the final state.
//   - A corrupt cursor fails with ErrInvalidCursor, an unknown class with ErrUnknownClass, both
//     matching ErrPermanent.
//   - Sources that implement source.Exporter give every task of an export the same view and the
//     same cursor, even with writes between the tasks' openings.
package sourcetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/source"
)

// Harness connects the suite to one source and lets it change the data behind it. Each call of
// the factory given to Run returns a harness over fresh, empty data.
type Harness struct {
	// Source under test; the suite does not close it.
	Source source.Source
	// Class is the data class the harness's records belong to; Tenant their tenant.
	Class  string
	Tenant string
	// Put creates or updates record key of customer with value, committed when it returns. It is
	// called from several goroutines at once.
	Put func(t testing.TB, customer, key, value string)
	// Delete deletes record key of customer, committed when it returns.
	Delete func(t testing.TB, customer, key string)
	// RecordKey maps a suite key to the Record.Key the source reports for it.
	RecordKey func(key string) string
	// Value extracts the suite's value from a record's bytes.
	Value func(t testing.TB, rec source.Record) string
	// Tombstones says whether incremental snapshots report deletions.
	Tombstones bool
	// Overlap says that incremental snapshots may yield unchanged records again while unrelated
	// transactions run in the same system (PostgreSQL's xmin mode does). The suite then accepts
	// extra records whose value did not change; it still requires every changed one.
	Overlap bool
}

// Run runs the suite; newHarness is called once per subtest.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"FullExact", testFullExact},
		{"IncrementalExact", testIncrementalExact},
		{"RangesCoverOnce", testRangesCoverOnce},
		{"ConcurrentWritesNotLost", testConcurrentWrites},
		{"Errors", testErrors},
		{"SharedExport", testSharedExport},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newHarness(t))
		})
	}
}

// id names a record in the suite's model.
type id struct{ customer, key string }

// state maps a record to its value; tombstones are kept in a separate set when read.
type state map[id]string

func customer(i int) string { return fmt.Sprintf("cust-%03d", i) }

// seed writes n records spread over customers and returns the model.
func seed(t *testing.T, h Harness, customers, n int) state {
	t.Helper()
	m := state{}
	for i := range n {
		c, k := customer(i%customers), fmt.Sprintf("k%05d", i)
		v := fmt.Sprintf("v0-%d", i)
		h.Put(t, c, k, v)
		m[id{c, k}] = v
	}
	return m
}

// result is what a snapshot yielded.
type result struct {
	live       state
	tombstones map[id]bool
	cursor     []byte
}

// read runs one snapshot to the end, failing on duplicates and records the harness cannot map.
func read(t *testing.T, h Harness, req source.Request, keyOf map[string]string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req.DataClass = h.Class
	snap, err := h.Source.Snapshot(ctx, req)
	if err != nil {
		t.Fatalf("Snapshot(%s): %v", req.Method, err)
	}
	defer func() {
		if err := snap.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := snap.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}()
	if _, err := snap.Cursor(); err == nil {
		t.Errorf("Cursor before io.EOF returned no error")
	}
	res := result{live: state{}, tombstones: map[id]bool{}}
	for {
		rec, err := snap.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		key, ok := keyOf[rec.Key]
		if !ok {
			t.Fatalf("record key %q is not one the harness made", rec.Key)
		}
		if rec.Tenant != h.Tenant {
			t.Errorf("record %q: tenant %q, want %q", rec.Key, rec.Tenant, h.Tenant)
		}
		r := id{rec.CustomerID, key}
		if _, dup := res.live[r]; dup || res.tombstones[r] {
			t.Errorf("record %v yielded twice", r)
		}
		if rec.Deleted {
			res.tombstones[r] = true
			continue
		}
		res.live[r] = h.Value(t, rec)
	}
	if _, err := snap.Next(ctx); err != io.EOF {
		t.Errorf("Next after io.EOF = %v, want io.EOF", err)
	}
	c, err := snap.Cursor()
	if err != nil || len(c) == 0 {
		t.Fatalf("Cursor after io.EOF = %q, %v", c, err)
	}
	res.cursor = c
	return res
}

// keys maps every record key the harness can produce for the model's keys back to them.
func keys(h Harness, ms ...state) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for r := range m {
			out[h.RecordKey(r.key)] = r.key
		}
	}
	return out
}

func diff(t *testing.T, what string, got, want state) {
	t.Helper()
	if maps.Equal(got, want) {
		return
	}
	var missing, extra, wrong []string
	for r, v := range want {
		g, ok := got[r]
		switch {
		case !ok:
			missing = append(missing, fmt.Sprint(r))
		case g != v:
			wrong = append(wrong, fmt.Sprintf("%v: got %q want %q", r, g, v))
		}
	}
	for r := range got {
		if _, ok := want[r]; !ok {
			extra = append(extra, fmt.Sprint(r))
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	slices.Sort(wrong)
	t.Errorf("%s: %d records, want %d; missing %d %v; extra %d %v; wrong value %d %v", what, len(got), len(want),
		len(missing), head(missing), len(extra), head(extra), len(wrong), head(wrong))
}

func head(s []string) []string { return s[:min(len(s), 5)] }

func testFullExact(t *testing.T, h Harness) {
	m := seed(t, h, 17, 250)
	res := read(t, h, source.Request{Method: source.Full}, keys(h, m))
	diff(t, "full", res.live, m)
	if len(res.tombstones) != 0 {
		t.Errorf("full snapshot yielded %d tombstones", len(res.tombstones))
	}
}

func testIncrementalExact(t *testing.T, h Harness) {
	m := seed(t, h, 11, 120)
	full := read(t, h, source.Request{Method: source.Full}, keys(h, m))
	diff(t, "full", full.live, m)

	idle := read(t, h, source.Request{Method: source.Incremental, Cursor: full.cursor}, keys(h, m))
	diff(t, "incremental with no writes", overlap(h, idle.live, state{}, m), state{})
	before := maps.Clone(m)

	changed, deleted := state{}, map[id]bool{}
	i := 0
	for r := range m { // map order: a random selection
		switch {
		case i < 20:
			v := "v1-" + r.key
			h.Put(t, r.customer, r.key, v)
			m[r], changed[r] = v, v
		case i < 30:
			h.Delete(t, r.customer, r.key)
			delete(m, r)
			deleted[r] = true
		}
		i++
	}
	for j := range 15 {
		r := id{customer(j % 20), fmt.Sprintf("new%03d", j)}
		v := "v2-" + r.key
		h.Put(t, r.customer, r.key, v)
		m[r], changed[r] = v, v
	}
	km := keys(h, m, changed)
	maps.Copy(km, keys(h, stateOf(deleted)))
	inc := read(t, h, source.Request{Method: source.Incremental, Cursor: idle.cursor}, km)
	diff(t, "incremental after writes", overlap(h, inc.live, changed, before), changed)
	if h.Tombstones {
		if !maps.Equal(inc.tombstones, deleted) {
			t.Errorf("tombstones: got %d %v, want %d", len(inc.tombstones), inc.tombstones, len(deleted))
		}
	} else if len(inc.tombstones) != 0 {
		t.Errorf("source without tombstones yielded %d", len(inc.tombstones))
	}
	after := read(t, h, source.Request{Method: source.Full}, km)
	diff(t, "full after writes", after.live, m)
}

// overlap drops, for sources with Harness.Overlap, the records of got that are not in changed
// and still hold their value in before.
func overlap(h Harness, got, changed, before state) state {
	if !h.Overlap {
		return got
	}
	out := state{}
	for r, v := range got {
		if _, ok := changed[r]; !ok {
			if old, ok := before[r]; ok && old == v {
				continue
			}
		}
		out[r] = v
	}
	return out
}

func stateOf(ids map[id]bool) state {
	s := state{}
	for r := range ids {
		s[r] = ""
	}
	return s
}

func testRangesCoverOnce(t *testing.T, h Harness) {
	m := seed(t, h, 23, 200)
	km := keys(h, m)
	var ranges []source.CustomerRange
	if sp, ok := h.Source.(source.Splitter); ok {
		var err error
		ranges, err = sp.Split(context.Background(), h.Class, 4)
		if err != nil {
			t.Fatalf("Split: %v", err)
		}
		if len(ranges) < 2 {
			t.Errorf("Split(4) over 23 customers gave %d ranges", len(ranges))
		}
	} else {
		ranges = source.Ranges([]string{customer(5), customer(12), customer(12) + "x", customer(99)})
	}
	got := state{}
	for _, rg := range ranges {
		res := read(t, h, source.Request{Method: source.Full, Range: rg}, km)
		for r, v := range res.live {
			if !rg.Contains(r.customer) {
				t.Errorf("range %+v yielded customer %q", rg, r.customer)
			}
			if _, dup := got[r]; dup {
				t.Errorf("record %v in two ranges", r)
			}
			got[r] = v
		}
	}
	diff(t, "union of ranges", got, m)
}

// testConcurrentWrites reads a full snapshot slowly while writers update and insert, then
// replays the snapshot and the next incremental: the result must be the final state.
func testConcurrentWrites(t *testing.T, h Harness) {
	m := seed(t, h, 7, 100)
	var mu sync.Mutex
	final := maps.Clone(m)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	snap, err := h.Source.Snapshot(ctx, source.Request{DataClass: h.Class, Method: source.Full})
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()

	var wg sync.WaitGroup
	start := make(chan struct{})
	release := sync.OnceFunc(func() { close(start) })
	defer wg.Wait()
	defer release() // writers never stay blocked, whatever fails below
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range 40 {
				var r id
				if i%2 == 0 {
					k := (w*37 + i*11) % 100 // a seeded record: seed put key k at customer k%7
					r = id{customer(k % 7), fmt.Sprintf("k%05d", k)}
				} else {
					r = id{customer(w), fmt.Sprintf("w%d-%03d", w, i)}
				}
				v := fmt.Sprintf("c%d-%d", w, i)
				mu.Lock() // one writer per record at a time, so the model's order is the commit order
				h.Put(t, r.customer, r.key, v)
				final[r] = v
				mu.Unlock()
			}
		}()
	}

	km := map[string]string{}
	maps.Copy(km, keys(h, m))
	for w := range 3 {
		for i := range 40 {
			km[h.RecordKey(fmt.Sprintf("w%d-%03d", w, i))] = fmt.Sprintf("w%d-%03d", w, i)
		}
	}
	replay := state{}
	n := 0
	for {
		rec, err := snap.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if n == 10 {
			release() // writers run while most of the snapshot is still unread
		}
		if n >= 10 && n%10 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		n++
		replay[id{rec.CustomerID, km[rec.Key]}] = h.Value(t, rec)
	}
	release()
	c, err := snap.Cursor()
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	inc := read(t, h, source.Request{Method: source.Incremental, Cursor: c}, km)
	maps.Copy(replay, inc.live)
	diff(t, "full snapshot then incremental", replay, final)
}

func testErrors(t *testing.T, h Harness) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  source.Request
		want error
	}{
		{"corrupt cursor", source.Request{DataClass: h.Class, Method: source.Incremental, Cursor: []byte("\x00garbage")}, source.ErrInvalidCursor},
		{"unknown class", source.Request{DataClass: "no-such-class", Method: source.Full}, source.ErrUnknownClass},
		{"no method", source.Request{DataClass: h.Class}, source.ErrInvalidRequest},
	} {
		snap, err := h.Source.Snapshot(ctx, tc.req)
		if err == nil {
			// A source may only find out on the first Next.
			_, err = snap.Next(ctx)
			snap.Close()
		}
		if !errors.Is(err, tc.want) || !errors.Is(err, source.ErrPermanent) {
			t.Errorf("%s: err = %v, want %v (permanent)", tc.name, err, tc.want)
		}
	}
}

func testSharedExport(t *testing.T, h Harness) {
	ex, ok := h.Source.(source.Exporter)
	if !ok {
		t.Log("source does not implement source.Exporter")
		return
	}
	ctx := context.Background()
	m := seed(t, h, 9, 90)
	e, err := ex.Export(ctx, source.Request{DataClass: h.Class, Method: source.Full})
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	defer e.Close()
	km := keys(h, m)
	km[h.RecordKey("late")] = "late"
	got := state{}
	for i, rg := range source.Ranges([]string{customer(3), customer(6)}) {
		// Writes between tasks must not show in later tasks: they all read the exported view.
		h.Put(t, customer(i), "late", "late")
		res := read(t, h, source.Request{Method: source.Full, Range: rg, Shared: e.Token()}, km)
		if string(res.cursor) != string(e.Cursor()) {
			t.Errorf("task %d cursor %q, export cursor %q", i, res.cursor, e.Cursor())
		}
		maps.Copy(got, res.live)
	}
	diff(t, "tasks of one export", got, m)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	inc := read(t, h, source.Request{Method: source.Incremental, Cursor: e.Cursor()}, km)
	inc.live = overlap(h, inc.live, state{}, m)
	want := state{{customer(0), "late"}: "late", {customer(1), "late"}: "late", {customer(2), "late"}: "late"}
	diff(t, "incremental after the export", inc.live, want)
}
