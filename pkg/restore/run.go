package restore

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"

	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/target"
)

// DefaultParallelism is the number of ranged reads, and of file writes, a restore keeps in
// flight when Restorer.Parallelism is not set: twice the CPUs, since reads wait on storage and
// writes on the disk as much as they use a CPU.
func DefaultParallelism() int { return 2 * runtime.GOMAXPROCS(0) }

// How items are grouped into ranged reads. Items of one pack closer than maxGap are read in one
// request, skipping the bytes between (a request costs a round trip; skipping 1 MiB costs less
// on every backend); a range stops growing at maxRange, so a large pack is read by several
// workers at once. Items up to smallItem bytes are read into memory and checked before any byte
// is written; larger ones are streamed (memory does not grow with an item).
const (
	maxGap    = 1 << 20
	maxRange  = 8 << 20
	smallItem = 1 << 20
	readBuf   = 256 << 10
	// maxInMemory bounds a small item's record decompressed in memory (a record that compresses
	// very well is streamed instead).
	maxInMemory = 8 << 20
)

func (r *Restorer) parallelism() int {
	if r.Parallelism > 0 {
		return r.Parallelism
	}
	return DefaultParallelism()
}

// job is one item to restore.
type job struct {
	located
	idx  int    // position among the candidates (see newer)
	dek  []byte // its customer's data key
	size int64  // its record's size, once authenticated
	// bad lists the replicas that failed, in target order, reported as skipped if a later
	// target serves the item and as the failure otherwise.
	bad []repository.Bad
}

// newer reports whether a is a later version than b: by event time, then stream sequence, then
// candidate order (design.md section 7, "Which version is written").
func newer(a, b *job) bool {
	if !a.entry.EventTime.Equal(b.entry.EventTime) {
		return a.entry.EventTime.After(b.entry.EventTime)
	}
	if a.entry.Seq != b.entry.Seq {
		return a.entry.Seq > b.entry.Seq
	}
	return a.idx > b.idx
}

// slot is a record's file: the version written so far. Its lock orders the renames of two
// versions restored at once, so the newer one stands whichever finishes first.
type slot struct {
	mu      sync.Mutex
	written *job
}

// run is one restore's shared state.
type run struct {
	r        *Restorer
	out      string
	log      *slog.Logger
	targets  []target.Reader
	progress func(Progress)

	mu        sync.Mutex
	items     int
	bytes     int64
	customers map[string]bool
	failures  []failure
	records   map[string]*slot
	dirs      map[string]error
	done      Progress
}

type failure struct {
	idx int
	msg string
}

func newRun(r *Restorer, out string, jobs []*job) *run {
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ru := &run{r: r, out: out, log: log, targets: r.Targets, progress: r.Progress,
		customers: map[string]bool{}, records: map[string]*slot{}, dirs: map[string]error{}}
	ru.done.TotalItems = len(jobs)
	for _, j := range jobs {
		ru.done.TotalBytes += max(j.entry.Length, 0)
	}
	return ru
}

// report fills rep with what the run did. Failures are in candidate order whatever order the
// workers met them in.
func (ru *run) report(rep *Report) {
	ru.mu.Lock()
	defer ru.mu.Unlock()
	rep.Items += ru.items
	rep.Bytes += ru.bytes
	rep.Customers = len(ru.customers)
	for _, s := range ru.records {
		if s.written != nil {
			rep.Records++
		}
	}
	slices.SortStableFunc(ru.failures, func(a, b failure) int { return cmp.Compare(a.idx, b.idx) })
	for _, f := range ru.failures {
		rep.Failures = append(rep.Failures, f.msg)
	}
}

// execute reads and writes every job, Parallelism ranged reads and Parallelism file writes at a
// time. Units with the newest
// versions go first, so an older version met later finds its record written and is only
// authenticated, not written.
func (ru *run) execute(ctx context.Context, jobs []*job) error {
	byPack := map[string][]*job{}
	var packs []string
	for _, j := range jobs {
		// The index is not authenticated: check the id before it names an object.
		if !pack.ValidID(j.pack) {
			ru.fail(j, fmt.Errorf("malformed pack id %q in the index", j.pack))
			continue
		}
		if j.entry.Offset < 0 || j.entry.Length < 0 {
			ru.fail(j, fmt.Errorf("malformed byte range %d+%d in the index", j.entry.Offset, j.entry.Length))
			continue
		}
		if _, ok := byPack[j.pack]; !ok {
			packs = append(packs, j.pack)
		}
		byPack[j.pack] = append(byPack[j.pack], j)
	}
	var units [][]*job
	for _, p := range packs {
		units = append(units, ranges(byPack[p])...)
	}
	// Each unit is ranked by its newest item, computed once.
	newest := make(map[*job]*job, len(units))
	for _, u := range units {
		n := u[0]
		for _, j := range u[1:] {
			if newer(j, n) {
				n = j
			}
		}
		newest[u[0]] = n
	}
	slices.SortStableFunc(units, func(a, b []*job) int {
		if na, nb := newest[a[0]], newest[b[0]]; newer(na, nb) {
			return -1
		} else if newer(nb, na) {
			return 1
		}
		return 0
	})
	workers := make([]*worker, max(1, min(ru.r.parallelism(), len(units))))
	for i := range workers {
		dec, err := repository.NewItemDecoder(maxInMemory)
		if err != nil {
			return err
		}
		defer dec.Close()
		workers[i] = &worker{run: ru, br: bufio.NewReaderSize(nil, readBuf), dec: dec}
	}
	// Files are written by a pool of their own: on a slow disk a range's items are written in
	// parallel even when one range holds them all (one customer's items, one pack).
	writes := make(chan record, len(workers))
	var wwg sync.WaitGroup
	for range ru.r.parallelism() {
		wwg.Go(func() { ru.writer(ctx, writes) })
	}
	next := make(chan []*job)
	var wg sync.WaitGroup
	for _, w := range workers {
		w.writes = writes
		wg.Go(func() {
			for u := range next {
				w.unit(ctx, u)
			}
		})
	}
	for _, u := range units {
		if ctx.Err() != nil {
			break
		}
		next <- u
	}
	close(next)
	wg.Wait()
	close(writes)
	wwg.Wait()
	return nil
}

// ranges sorts items of one pack by offset and groups them into ranged reads.
func ranges(items []*job) [][]*job {
	items = slices.Clone(items)
	slices.SortStableFunc(items, func(a, b *job) int { return cmp.Compare(a.entry.Offset, b.entry.Offset) })
	var out [][]*job
	var cur []*job
	var start, end int64
	for _, j := range items {
		o, e := j.entry.Offset, j.entry.Offset+j.entry.Length
		if len(cur) > 0 && (o < end || o-end > maxGap || e-start > maxRange) {
			out = append(out, cur)
			cur = nil
		}
		if len(cur) == 0 {
			start = o
		}
		cur = append(cur, j)
		end = e
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// worker reads units one at a time.
type worker struct {
	*run
	br     *bufio.Reader
	dec    *repository.ItemDecoder
	buf    []byte
	writes chan<- record
}

// unit restores the items of one range from the first target whose copy of each verifies: the
// items a target fails are read again, together, from the next.
func (w *worker) unit(ctx context.Context, items []*job) {
	pending := [][]*job{items}
	for _, t := range w.targets {
		var failed []*job
		for _, rg := range pending {
			failed = append(failed, w.rangeFrom(ctx, t, rg)...)
		}
		if len(failed) == 0 || ctx.Err() != nil {
			return
		}
		pending = ranges(failed)
	}
	for _, rg := range pending {
		for _, j := range rg {
			w.fail(j, nil)
		}
	}
}

// rangeFrom reads one range of a pack from t and restores its items; it returns those that
// failed on t.
func (w *worker) rangeFrom(ctx context.Context, t target.Reader, items []*job) (failed []*job) {
	first, last := items[0].entry, items[len(items)-1].entry
	start, end := first.Offset, last.Offset+last.Length
	name := repository.PackName(items[0].pack)
	failAll := func(rest []*job, err error) []*job {
		for _, j := range rest {
			j.bad = append(j.bad, repository.Bad{Target: t.Name(), Object: name + " item " + j.entry.ID, Err: err})
		}
		return append(failed, rest...)
	}
	if err := ctx.Err(); err != nil {
		return failAll(items, err)
	}
	rc, err := t.GetRange(ctx, name, start, end-start)
	if err != nil {
		return failAll(items, err)
	}
	defer rc.Close()
	w.br.Reset(rc)
	defer w.br.Reset(nil)
	pos := start
	for i, j := range items {
		if err := ctx.Err(); err != nil {
			return failAll(items[i:], err)
		}
		if gap := j.entry.Offset - pos; gap > 0 {
			if _, err := w.br.Discard(int(gap)); err != nil {
				return failAll(items[i:], readErr(err))
			}
		}
		pos = j.entry.Offset + j.entry.Length
		src := &source{r: io.LimitReader(w.br, j.entry.Length)}
		queued, err := w.item(ctx, j, src)
		// Whatever the item's verdict, the stream must stand at its end for the next one.
		if _, derr := io.Copy(io.Discard, src); derr != nil || src.n != j.entry.Length {
			serr := readErr(cmp.Or(derr, src.err, io.ErrUnexpectedEOF))
			if err == nil {
				err = serr
			}
			failed = failAll(items[i:i+1], err)
			return failAll(items[i+1:], serr)
		}
		if err != nil {
			failed = failAll(items[i:i+1], err)
			continue
		}
		if !queued {
			w.succeed(j)
		}
	}
	return failed
}

func readErr(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read pack: %w", err)
}

// source counts the bytes read from one item's range and keeps the read error.
type source struct {
	r   io.Reader
	n   int64
	err error
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// item authenticates and decrypts one item read from src and writes its record, unless a newer
// version of the record is already written. Its checks and their order are those of a restore
// item by item: the decryption's verdict first, then the manifest's length and SHA-256.
func (w *worker) item(ctx context.Context, j *job, src io.Reader) (queued bool, err error) {
	if j.entry.Length > smallItem {
		h := &hashingReader{r: src, h: sha256.New()}
		return false, w.stream(ctx, j, h, func() error {
			// Drain so that the checksum covers every byte of the stored item.
			if _, err := io.Copy(io.Discard, h); err != nil {
				return err
			}
			if h.n != j.entry.Length || hex.EncodeToString(h.h.Sum(nil)) != j.entry.SHA256 {
				return ErrChecksum
			}
			return nil
		})
	}
	if cap(w.buf) < int(j.entry.Length) {
		w.buf = make([]byte, j.entry.Length)
	}
	b := w.buf[:j.entry.Length]
	if _, err := io.ReadFull(src, b); err != nil {
		return false, readErr(err)
	}
	sum := sha256.Sum256(b)
	var check error
	if hex.EncodeToString(sum[:]) != j.entry.SHA256 {
		check = ErrChecksum
	}
	meta, data, err := w.dec.Open(b, j.dek, j.entry.Customer, j.class, j.entry.ID)
	if errors.Is(err, repository.ErrItemTooLarge) {
		// A record that compressed well: decompress it as a stream.
		return false, w.stream(ctx, j, bytes.NewReader(b), func() error { return check })
	}
	if err != nil {
		return false, err
	}
	if check != nil {
		return false, check
	}
	j.size = meta.Size
	s := w.slot(meta)
	if s.newerWritten(j) {
		return false, nil // overwritten: authenticated, not written
	}
	// Verified: the file is written by the write pool while this worker reads on.
	select {
	case w.writes <- record{j: j, s: s, meta: meta, data: bytes.Clone(data)}:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// stream restores an item as a stream: its record is written to a temporary file as it is
// decrypted, and check (the manifest's length and SHA-256) decides, once every byte is read,
// whether it is renamed into place.
func (w *worker) stream(ctx context.Context, j *job, in io.Reader, check func() error) error {
	ir, err := pack.OpenItemStream(in, j.dek, j.entry.Customer, j.class, j.entry.ID)
	if err != nil {
		return err
	}
	defer ir.Close()
	j.size = ir.Meta.Size // checked when ir is read to its end
	s := w.slot(ir.Meta)
	if s.newerWritten(j) {
		// Overwritten: authenticate every byte, write nothing.
		if _, err := io.Copy(io.Discard, ir); err != nil {
			return err
		}
		return check()
	}
	dst := Path(w.out, ir.Meta.Tenant, ir.Meta.CustomerID, ir.Meta.RecordKey)
	tmp, err := w.writeTemp(filepath.Dir(dst), ir)
	if err != nil {
		return err
	}
	if err := check(); err != nil {
		os.Remove(tmp)
		return err
	}
	return w.place(ctx, s, j, tmp, dst)
}

// place renames tmp into dst (slot.commit), or removes it when ctx ended, a newer version was
// written or the rename failed. A renamed file is not removed "just in case": that was a
// failing unlink and rmdir per file, which a restore of many small records feels.
func (ru *run) place(ctx context.Context, s *slot, j *job, tmp, dst string) error {
	if err := ctx.Err(); err != nil {
		os.Remove(tmp)
		return err
	}
	renamed, err := s.commit(j, tmp, dst)
	if !renamed {
		os.Remove(tmp)
	}
	return err
}

// record is a verified record waiting for the write pool.
type record struct {
	j    *job
	s    *slot
	meta pack.ItemMeta
	data []byte
}

// writer writes records until writes is closed; after a cancellation it only drains them.
func (ru *run) writer(ctx context.Context, writes <-chan record) {
	for rec := range writes {
		if ctx.Err() != nil {
			continue
		}
		if err := ru.write(ctx, rec); err != nil {
			if ctx.Err() == nil {
				ru.fail(rec.j, fmt.Errorf("write: %w", err))
			}
			continue
		}
		ru.succeed(rec.j)
	}
}

func (ru *run) write(ctx context.Context, rec record) error {
	if rec.s.newerWritten(rec.j) {
		return nil
	}
	dst := Path(ru.out, rec.meta.Tenant, rec.meta.CustomerID, rec.meta.RecordKey)
	tmp, err := ru.writeTemp(filepath.Dir(dst), bytes.NewReader(rec.data))
	if err != nil {
		return err
	}
	return ru.place(ctx, rec.s, rec.j, tmp, dst)
}

// writeTemp writes the record to a new temporary file beside its destination (design.md
// section 7: a tree never shows a partial record under a final name).
func (ru *run) writeTemp(dir string, r io.Reader) (string, error) {
	if err := ru.mkdir(dir); err != nil {
		return "", err
	}
	f, err := createTemp(dir)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// mkdir creates dir once per restore.
func (ru *run) mkdir(dir string) error {
	ru.mu.Lock()
	err, ok := ru.dirs[dir]
	ru.mu.Unlock()
	if ok && err == nil {
		return nil
	}
	err = os.MkdirAll(dir, 0o700)
	ru.mu.Lock()
	ru.dirs[dir] = err
	ru.mu.Unlock()
	return err
}

// slot returns the file of the record meta names: (tenant, customer id, record key), as bytes.
func (ru *run) slot(meta pack.ItemMeta) *slot {
	key := meta.Tenant + "\x00" + meta.CustomerID + "\x00" + meta.RecordKey
	ru.mu.Lock()
	defer ru.mu.Unlock()
	s, ok := ru.records[key]
	if !ok {
		s = &slot{}
		ru.records[key] = s
	}
	return s
}

func (s *slot) newerWritten(j *job) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written != nil && newer(s.written, j)
}

// commit renames tmp into place unless a newer version was written meanwhile, and reports
// whether it did.
func (s *slot) commit(j *job, tmp, dst string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written != nil && newer(s.written, j) {
		return false, nil
	}
	if err := rename(tmp, dst); err != nil {
		return false, err
	}
	s.written = j
	return true, nil
}

// succeed records an item restored (or authenticated and found overwritten); the replicas that
// failed before the one that served it are reported as skipped.
func (ru *run) succeed(j *job) {
	for _, b := range j.bad {
		ru.r.repo().Skip(b.Target, b.Object, b.Err)
	}
	ru.mu.Lock()
	ru.items++
	ru.bytes += j.size
	ru.customers[j.entry.Customer] = true
	ru.mu.Unlock()
	ru.step(j)
}

// fail records an item no target could restore: err, or what each target answered.
func (ru *run) fail(j *job, err error) {
	if err == nil && len(j.bad) == 0 {
		err = errors.New("no target to read from")
	} else if err == nil {
		errs := make([]error, len(j.bad))
		for i, b := range j.bad {
			errs[i] = fmt.Errorf("%s: %w", b.Target, b.Err)
		}
		err = errors.Join(errs...)
	}
	ru.log.Error("item not restored", "pack", j.pack, "item", j.entry.ID, "err", err)
	ru.mu.Lock()
	ru.failures = append(ru.failures, failure{j.idx, fmt.Sprintf("item %s in pack %s: %v", j.entry.ID, j.pack, err)})
	ru.mu.Unlock()
	ru.step(j)
}

// step reports progress; the lock makes the calls one at a time and in order.
func (ru *run) step(j *job) {
	ru.mu.Lock()
	defer ru.mu.Unlock()
	ru.done.Items++
	ru.done.Bytes += max(j.entry.Length, 0)
	if ru.progress != nil {
		ru.progress(ru.done)
	}
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
