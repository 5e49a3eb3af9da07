package restore_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/target"
)

// versioned backs up customers × records, each record in three versions stored in packs whose
// order is not the versions' order, and returns every record stored, oldest version first.
func versioned(t *testing.T, b *bundle, customers, records int) []record {
	t.Helper()
	var all []record
	for v := range 3 {
		var recs []record
		for c := range customers {
			for k := range records {
				at := t0.Add(time.Duration(v)*time.Hour + time.Duration(c*records+k)*time.Second)
				recs = append(recs, rec(fmt.Sprint("c", c), fmt.Sprint("k", k), fmt.Sprintf("v%d %s", v, randomData(uint64(v*1000+c*records+k), 50+k*37)), at))
			}
		}
		all = append(all, recs...)
	}
	// Packs hold mixed versions: the newest of a record is not always in the last pack written.
	order := []int{2, 0, 1}
	for i := range order {
		var p []record
		for j, r := range all {
			if j%3 == order[i] {
				p = append(p, r)
			}
		}
		b.backup(t, []string{"critical", "important"}[i%2], p...)
	}
	return all
}

// latest returns the newest version of each record at or before asOf (zero: the newest).
func latest(all []record, asOf time.Time) []record {
	best := map[string]record{}
	var keys []string
	for _, r := range all {
		if !asOf.IsZero() && r.at.After(asOf) {
			continue
		}
		k := r.tenant + "\x00" + r.customer + "\x00" + r.key
		if old, ok := best[k]; !ok || r.at.After(old.at) {
			if !ok {
				keys = append(keys, k)
			}
			best[k] = r
		}
	}
	out := make([]record, 0, len(keys))
	for _, k := range keys {
		out = append(out, best[k])
	}
	return out
}

// countingReader counts the reads of pack objects.
type countingReader struct {
	target.Reader
	reads atomic.Int64
}

func (c *countingReader) GetRange(ctx context.Context, name string, off, n int64) (io.ReadCloser, error) {
	if strings.HasPrefix(name, "packs/") {
		c.reads.Add(1)
	}
	return c.Reader.GetRange(ctx, name, off, n)
}

func (c *countingReader) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if strings.HasPrefix(name, "packs/") {
		c.reads.Add(1)
	}
	return c.Reader.Get(ctx, name)
}

// Many customers, many versions, several packs, one worker or many: the tree is the newest
// version of every record (or the one as of a time), byte for byte, and each pack is read once.
func TestParallelRestoreWritesTheSelectedVersions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	all := versioned(t, b, 12, 5)
	for _, par := range []int{1, 3, 16} {
		for _, tc := range []struct {
			name string
			asOf time.Time
		}{
			{"latest", time.Time{}},
			{"as of the second version", t0.Add(90 * time.Minute)},
			{"as of the first", t0.Add(30 * time.Minute)},
		} {
			t.Run(fmt.Sprintf("%s, parallelism %d", tc.name, par), func(t *testing.T) {
				t.Parallel()
				counted := &countingReader{Reader: b.targets[0]}
				r := b.restorer(counted, b.targets[1], b.targets[2])
				r.Parallelism = par
				out := t.TempDir()
				rep, err := r.All(t.Context(), restore.Options{Out: out, AsOf: tc.asOf})
				if n := counted.reads.Load(); n > 3 {
					t.Errorf("%d reads of the 3 packs", n)
				}
				w := latest(all, tc.asOf)
				var candidates int
				var size int64
				for _, x := range all {
					if tc.asOf.IsZero() || !x.at.After(tc.asOf) {
						candidates++
						size += int64(len(x.data))
					}
				}
				if err != nil || !rep.OK() || rep.Customers != 12 || rep.Records != len(w) || rep.Items != candidates || rep.Bytes != size {
					t.Fatalf("All: %+v, %v; want %d records from %d items of %d bytes", rep, err, len(w), candidates, size)
				}
				checkFiles(t, out, want(out, w...))

				out = t.TempDir()
				rep, err = r.Customer(t.Context(), "shop", "c3", restore.Options{Out: out, AsOf: tc.asOf})
				var mine []record
				for _, x := range w {
					if x.customer == "c3" {
						mine = append(mine, x)
					}
				}
				if err != nil || !rep.OK() || rep.Customers != 1 || rep.Records != len(mine) {
					t.Fatalf("Customer: %+v, %v", rep, err)
				}
				checkFiles(t, out, want(out, mine...))
			})
		}
	}
}

// An item larger than the in-memory limit is streamed; a damaged copy of it, or of one item in
// the middle of a ranged read, falls back to the next target for that item only.
func TestDamagedItemInRangeFallsBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	recs := []record{
		rec("alice", "a", "first", t0),
		rec("alice", "big", randomData(5, 3*crypto.SegmentSize+1<<20), t0), // over 1 MiB stored
		rec("alice", "c", "third", t0),
		rec("alice", "d", "fourth", t0),
	}
	p := b.backup(t, "critical", recs...)
	// On target 0 the big item and the third are damaged; on target 1 the big one only.
	for tg, which := range [][]int{{1, 2}, {1}} {
		d := bytes.Clone(p.Data)
		for _, i := range which {
			e := p.Manifest.Items[i]
			d[e.Offset+e.Length/2] ^= 0x10
		}
		replace(t, b.targets[tg], pack.ObjectName(p.Manifest.Pack), d)
	}
	for _, all := range []bool{false, true} {
		out := t.TempDir()
		r := b.restorer()
		var rep restore.Report
		var err error
		if all {
			rep, err = r.All(t.Context(), restore.Options{Out: out})
		} else {
			rep, err = r.Customer(t.Context(), "shop", "alice", restore.Options{Out: out})
		}
		if err != nil || !rep.OK() || rep.Items != 4 || len(rep.Skipped) != 3 {
			t.Fatalf("all=%v: %+v, %v", all, rep, err)
		}
		skips := map[string]int{
			b.targets[0].Name() + ": " + pack.ObjectName(p.Manifest.Pack) + " item " + p.Manifest.Items[1].ID: 1,
			b.targets[0].Name() + ": " + pack.ObjectName(p.Manifest.Pack) + " item " + p.Manifest.Items[2].ID: 1,
			b.targets[1].Name() + ": " + pack.ObjectName(p.Manifest.Pack) + " item " + p.Manifest.Items[1].ID: 1,
		}
		for _, s := range rep.Skipped {
			name, _, _ := strings.Cut(s, ": crypto")
			if skips[name] == 0 {
				t.Errorf("all=%v: unexpected skipped %q", all, s)
			}
			skips[name]--
		}
		checkFiles(t, out, want(out, recs...))
	}
}

// A restore cancelled halfway stops with the context's error and leaves only complete records
// under their final names: no temporary file, no partial record.
func TestCancelledHalfwayLeavesNoPartialFile(t *testing.T) {
	t.Parallel()
	b := setup(t)
	all := versioned(t, b, 10, 6)
	valid := map[string]bool{}
	out := t.TempDir()
	for _, r := range all {
		rel, _ := filepath.Rel(out, restore.Path(out, r.tenant, r.customer, r.key))
		valid[rel+"\x00"+string(r.data)] = true
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r := b.restorer()
	r.Parallelism = 4
	r.Progress = func(p restore.Progress) {
		if p.Items == 20 {
			cancel()
		}
	}
	rep, err := r.All(ctx, restore.Options{Out: out})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("All = %+v, %v; want context.Canceled", rep, err)
	}
	noTemporaryFiles(t, out)
	got := files(t, out)
	if len(got) == len(latest(all, time.Time{})) {
		t.Logf("every record was written before the cancellation was seen")
	}
	for name, data := range got {
		if !valid[name+"\x00"+data] {
			t.Errorf("%s holds %d bytes that are no version of it", name, len(data))
		}
	}
}

// ProgressJSON writes one JSON object a line, at most once per interval and always the last,
// with the rate and the time left measured on the injected clock.
func TestProgressJSON(t *testing.T) {
	t.Parallel()
	now := t0
	var buf bytes.Buffer
	report := restore.ProgressJSON(&buf, func() time.Time { return now }, time.Second)
	const total = 10 << 20
	for i := 1; i <= 10; i++ {
		now = now.Add(400 * time.Millisecond) // 1 MiB every 0.4 s
		report(restore.Progress{Items: i, TotalItems: 10, Bytes: int64(i) << 20, TotalBytes: total})
	}
	var lines []restore.ProgressRecord
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var p restore.ProgressRecord
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, p)
	}
	// At 0.4 s (the first), 1.6 s, 2.8 s, and the last at 4.0 s.
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4: %+v", len(lines), lines)
	}
	first, third, last := lines[0], lines[2], lines[3]
	if first.Items != 1 || first.TotalItems != 10 || first.Bytes != 1<<20 || first.TotalBytes != total || first.ETASeconds != nil {
		t.Errorf("first line %+v: the clock starts at it, so no rate is known", first)
	}
	if third.Items != 7 || third.ElapsedSeconds != 2.4 || third.BytesPerSecond != float64(7<<20)/2.4 ||
		third.ETASeconds == nil || *third.ETASeconds < 1.02 || *third.ETASeconds > 1.03 {
		t.Errorf("third line %+v (eta %v), want 7 items after 2.4 s and 3 MiB left at 7/2.4 MiB/s", third, *third.ETASeconds)
	}
	if last.Items != 10 || last.Bytes != total || last.ETASeconds == nil || *last.ETASeconds != 0 {
		t.Errorf("last line %+v", last)
	}
}

// ProgressLine rewrites one terminal line: items, MiB, rate and time left.
func TestProgressLine(t *testing.T) {
	t.Parallel()
	now := t0
	var buf bytes.Buffer
	report := restore.ProgressLine(&buf, func() time.Time { return now })
	report(restore.Progress{Items: 1, TotalItems: 4, Bytes: 1 << 20, TotalBytes: 4 << 20})
	now = now.Add(time.Second)
	report(restore.Progress{Items: 2, TotalItems: 4, Bytes: 2 << 20, TotalBytes: 4 << 20})
	now = now.Add(time.Millisecond)
	report(restore.Progress{Items: 3, TotalItems: 4, Bytes: 3 << 20, TotalBytes: 4 << 20}) // throttled
	now = now.Add(time.Millisecond)
	report(restore.Progress{Items: 4, TotalItems: 4, Bytes: 4 << 20, TotalBytes: 4 << 20})
	got := strings.Split(buf.String(), "\r\033[K")
	want := []string{"",
		"restoring 1/4 items, 1.0 MiB/4.0 MiB, 0.0 MiB/s, ETA ?",
		"restoring 2/4 items, 2.0 MiB/4.0 MiB, 2.0 MiB/s, ETA 1s",
		"restoring 4/4 items, 4.0 MiB/4.0 MiB, 4.0 MiB/s, ETA 0s"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("line updates\n%q\nwant\n%q", got, want)
	}
}

// A record that compresses to a small item but is too large to decompress in memory is
// decompressed as a stream, byte for byte.
func TestWellCompressedLargeRecord(t *testing.T) {
	t.Parallel()
	b := setup(t)
	big := rec("alice", "zeros", string(make([]byte, 9<<20)), t0)
	small := rec("alice", "small", "x", t0)
	b.backup(t, "critical", big, small)
	out := t.TempDir()
	rep, err := b.restorer().Customer(t.Context(), "shop", "alice", restore.Options{Out: out})
	if err != nil || !rep.OK() || rep.Records != 2 || rep.Bytes != 9<<20+1 {
		t.Fatalf("%+v, %v", rep, err)
	}
	checkFiles(t, out, want(out, big, small))
}

// noTemporaryFiles fails t for every temporary file (a name starting with ".") under out.
func noTemporaryFiles(t *testing.T, out string) {
	t.Helper()
	err := filepath.WalkDir(out, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") {
			t.Errorf("temporary file left: %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A record whose file cannot be put in place (a directory holds its name) is reported as a
// failure, its temporary file is removed, and every other record is restored.
func TestUnplaceableRecordLeavesNoTemporaryFile(t *testing.T) {
	t.Parallel()
	b := setup(t)
	recs := latest(versioned(t, b, 2, 3), time.Time{})
	out := t.TempDir()
	blocked := restore.Path(out, recs[0].tenant, recs[0].customer, recs[0].key)
	if err := os.MkdirAll(filepath.Join(blocked, "inside"), 0o700); err != nil {
		t.Fatal(err)
	}
	rep, err := b.restorer().All(t.Context(), restore.Options{Out: out})
	if err == nil && rep.OK() {
		t.Fatalf("All with a directory in a record's place = %+v, want a failure", rep)
	}
	// Each of the record's three versions was read and could not be placed.
	if len(rep.Failures) != 3 {
		t.Errorf("failures = %q, want the record's three versions", rep.Failures)
	}
	for _, f := range rep.Failures {
		if !strings.Contains(f, blocked+": is a directory") {
			t.Errorf("failure %q does not name the blocked file", f)
		}
	}
	noTemporaryFiles(t, out)
	got := files(t, out)
	for _, r := range recs[1:] {
		rel, _ := filepath.Rel(out, restore.Path(out, r.tenant, r.customer, r.key))
		if got[rel] != string(r.data) {
			t.Errorf("%s: restored %q, want %q", rel, got[rel], r.data)
		}
	}
}
