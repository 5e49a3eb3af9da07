// Package targettest is the conformance suite every storage target runs: the in-memory and
// local ones, and the cloud ones against real emulators. A test whose backend cannot be
// reached must fail, never skip.
//
// Behaviour the suite pins down beyond the package doc of target:
//
//   - Put rewinds r itself: a reader left at its end still stores the whole object.
//   - Put fails with ErrChecksumMismatch when r yields more or fewer than size bytes.
//   - Put on a cancelled context returns an error matching context.Canceled and publishes
//     nothing, also when the context ends while r is being read.
//   - GetRange with offset in [0, size] and length running past the end is cut at the end
//     (offset == size reads zero bytes); a negative offset or one past the end returns
//     ErrInvalidRange.
//   - Stat reports Name, Size and a non-zero ModTime; SHA256 may be zero, and if not it is right.
//   - Close may be called twice.
package targettest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/target"
)

// Option adjusts the suite for what a backend can prove where it runs.
type Option func(*options)

type options struct {
	lockNotEnforced string
	lockUnsupported string
}

// LockNotEnforced declares that the backend under test accepts retention and legal holds but does
// not enforce them (an emulator that ignores retention, say). The Locked test then only checks
// that such a Put stores the object intact and logs reason, so the gap stays visible in the
// test output instead of being hidden. Real services are always run without this option.
func LockNotEnforced(reason string) Option {
	return func(o *options) { o.lockNotEnforced = reason }
}

// LockUnsupported declares that the backend under test cannot apply retention or legal holds
// at all where it runs (an emulator without immutability, say) and refuses such a Put. The
// Locked test then checks that such a Put fails with an error matching target.ErrPermanent and
// leaves nothing visible under the name, and logs reason, so the gap stays visible in the test
// output. Real services are always run without this option.
func LockUnsupported(reason string) Option {
	return func(o *options) { o.lockUnsupported = reason }
}

// Run runs the conformance suite. newTarget must return a fresh, empty target for each call
// (a new directory, bucket or prefix); Run closes it when the subtest ends. Subtests run in
// parallel.
func Run(t *testing.T, newTarget func(t *testing.T) target.Target, opts ...Option) {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, tg target.Target)
	}{
		{"Identity", testIdentity},
		{"RoundTrip", testRoundTrip},
		{"PutRewinds", testPutRewinds},
		{"CreateOnly", testCreateOnly},
		{"ChecksumMismatch", testChecksumMismatch},
		{"SizeMismatch", testSizeMismatch},
		{"InvalidName", testInvalidName},
		{"GetRange", testGetRange},
		{"Stat", testStat},
		{"List", testList},
		{"ListStops", testListStops},
		{"Delete", testDelete},
		{"Locked", func(t *testing.T, tg target.Target) { testLocked(t, tg, o) }},
		{"ContextCancelled", testContextCancelled},
		{"CancelDuringPut", testCancelDuringPut},
		{"FailingReader", testFailingReader},
		{"ConcurrentPuts", testConcurrentPuts},
		{"ConcurrentSameName", testConcurrentSameName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tg := newTarget(t)
			if tg == nil {
				t.Fatal("newTarget returned nil")
			}
			t.Cleanup(func() {
				if err := tg.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, tg)
		})
	}
}

// Data returns n deterministic pseudo-random bytes for seed.
func Data(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)}).Read(b)
	return b
}

// Put stores data under name with its correct checksum and fails the test on error.
func Put(t testing.TB, tg target.Target, name string, data []byte) {
	t.Helper()
	if err := put(t.Context(), tg, name, data); err != nil {
		t.Fatalf("Put(%s, %d bytes): %v", name, len(data), err)
	}
}

// Read returns the whole object and fails the test on error.
func Read(t testing.TB, tg target.Target, name string) []byte {
	t.Helper()
	rc, err := tg.Get(t.Context(), name)
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%s): read: %v", name, err)
	}
	return b
}

// AssertMissing checks that name is invisible to Stat, Get, GetRange and List.
func AssertMissing(t testing.TB, tg target.Target, name string) {
	t.Helper()
	ctx := t.Context()
	if _, err := tg.Stat(ctx, name); !errors.Is(err, target.ErrNotFound) {
		t.Errorf("Stat(%s) = %v, want ErrNotFound", name, err)
	}
	if rc, err := tg.Get(ctx, name); !errors.Is(err, target.ErrNotFound) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("Get(%s) = %v, want ErrNotFound", name, err)
	}
	if rc, err := tg.GetRange(ctx, name, 0, 1); !errors.Is(err, target.ErrNotFound) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("GetRange(%s) = %v, want ErrNotFound", name, err)
	}
	if names := listNames(t, tg, ""); slices.Contains(names, name) {
		t.Errorf("List shows %s", name)
	}
}

// AssertContent checks that name holds exactly want.
func AssertContent(t testing.TB, tg target.Target, name string, want []byte) {
	t.Helper()
	if got := Read(t, tg, name); !bytes.Equal(got, want) {
		t.Errorf("%s: content differs: got %d bytes, want %d", name, len(got), len(want))
	}
}

func put(ctx context.Context, tg target.Target, name string, data []byte) error {
	return tg.Put(ctx, name, bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)})
}

func listNames(t testing.TB, tg target.Target, prefix string) []string {
	t.Helper()
	names := []string{} // non-nil so comparisons with empty expectations are exact
	if err := tg.List(t.Context(), prefix, func(i target.Info) error {
		names = append(names, i.Name)
		return nil
	}); err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return names
}

func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s = %v, want %v", what, err, want)
	}
	if errors.Is(want, target.ErrPermanent) && !errors.Is(err, target.ErrPermanent) {
		t.Errorf("%s = %v, want it to match ErrPermanent", what, err)
	}
}

func testIdentity(t *testing.T, tg target.Target) {
	if tg.Name() == "" {
		t.Error("Name is empty")
	}
	if k := tg.Kind(); !slices.Contains([]string{"fs", "s3", "gcs", "azure", "mem", "rclone"}, k) {
		t.Errorf("Kind = %q, want one of fs, s3, gcs, azure, mem, rclone", k)
	}
	if err := tg.Close(); err != nil { // the cleanup closes a second time
		t.Errorf("Close: %v", err)
	}
}

func testRoundTrip(t *testing.T, tg target.Target) {
	for i, n := range []int{0, 1, 1000, 5<<20 + 123} {
		name := fmt.Sprintf("packs/%02x/%064x", i, i)
		data := Data(uint64(i), n)
		Put(t, tg, name, data)
		AssertContent(t, tg, name, data)
		info, err := tg.Stat(t.Context(), name)
		if err != nil {
			t.Fatalf("Stat(%s): %v", name, err)
		}
		if info.Name != name || info.Size != int64(n) {
			t.Errorf("Stat(%s) = %q, %d bytes; want %q, %d", name, info.Name, info.Size, name, n)
		}
	}
}

func testPutRewinds(t *testing.T, tg target.Target) {
	data := Data(1, 4096)
	r := bytes.NewReader(data)
	if _, err := r.Seek(0, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	if err := tg.Put(t.Context(), "a", r, int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)}); err != nil {
		t.Fatalf("Put with a reader at its end: %v", err)
	}
	AssertContent(t, tg, "a", data)
}

func testCreateOnly(t *testing.T, tg target.Target) {
	first, second := Data(1, 1000), Data(2, 1000)
	Put(t, tg, "packs/x", first)
	wantErr(t, "second Put, other bytes", put(t.Context(), tg, "packs/x", second), target.ErrExists)
	wantErr(t, "second Put, same bytes", put(t.Context(), tg, "packs/x", first), target.ErrExists)
	AssertContent(t, tg, "packs/x", first)
}

func testChecksumMismatch(t *testing.T, tg target.Target) {
	data := Data(1, 70000)
	bad := sha256.Sum256(data)
	bad[0] ^= 1
	err := tg.Put(t.Context(), "packs/bad", bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: bad})
	wantErr(t, "Put with a wrong checksum", err, target.ErrChecksumMismatch)
	AssertMissing(t, tg, "packs/bad")
	if names := listNames(t, tg, ""); len(names) != 0 {
		t.Errorf("List after failed Put = %v, want nothing", names)
	}
	Put(t, tg, "packs/bad", data) // nothing left behind blocks a correct Put
	AssertContent(t, tg, "packs/bad", data)
}

func testSizeMismatch(t *testing.T, tg target.Target) {
	data := Data(1, 1000)
	sum := sha256.Sum256(data)
	for _, size := range []int64{999, 1001} {
		err := tg.Put(t.Context(), "s", bytes.NewReader(data), size, target.PutOptions{SHA256: sum})
		wantErr(t, fmt.Sprintf("Put of 1000 bytes declared as %d", size), err, target.ErrChecksumMismatch)
		AssertMissing(t, tg, "s")
	}
}

func testInvalidName(t *testing.T, tg target.Target) {
	ctx := t.Context()
	Put(t, tg, "a/b", []byte("x"))
	for _, name := range []string{"", "/a", "a//b", "a/", "..", "a/../b", "a/./b", "./a", "A", "a b", "a\\b", "ü", "a\x00"} {
		wantErr(t, fmt.Sprintf("Put(%q)", name), put(ctx, tg, name, []byte("x")), target.ErrInvalidName)
		_, err := tg.Get(ctx, name)
		wantErr(t, fmt.Sprintf("Get(%q)", name), err, target.ErrInvalidName)
		_, err = tg.GetRange(ctx, name, 0, 1)
		wantErr(t, fmt.Sprintf("GetRange(%q)", name), err, target.ErrInvalidName)
		_, err = tg.Stat(ctx, name)
		wantErr(t, fmt.Sprintf("Stat(%q)", name), err, target.ErrInvalidName)
		wantErr(t, fmt.Sprintf("Delete(%q)", name), tg.Delete(ctx, name), target.ErrInvalidName)
	}
	if got := listNames(t, tg, ""); !slices.Equal(got, []string{"a/b"}) {
		t.Errorf("List = %v, want [a/b]", got)
	}
}

func testGetRange(t *testing.T, tg target.Target) {
	data := Data(1, 1000)
	Put(t, tg, "r", data)
	Put(t, tg, "empty", nil)
	for _, c := range []struct {
		name           string
		offset, length int64
		want           []byte
	}{
		{"r", 0, 10, data[:10]},
		{"r", 500, 100, data[500:600]},
		{"r", 990, 10, data[990:]},
		{"r", 990, -1, data[990:]},
		{"r", 0, -1, data},
		{"r", 995, 100, data[995:]},
		{"r", 100, 0, nil},
		{"r", 1000, -1, nil},
		{"r", 1000, 10, nil},
		{"empty", 0, -1, nil},
		{"empty", 0, 10, nil},
	} {
		rc, err := tg.GetRange(t.Context(), c.name, c.offset, c.length)
		if err != nil {
			t.Errorf("GetRange(%s, %d, %d): %v", c.name, c.offset, c.length, err)
			continue
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("GetRange(%s, %d, %d) = %d bytes, %v; want %d bytes", c.name, c.offset, c.length, len(got), err, len(c.want))
		}
	}
	for _, off := range []int64{-1, 1001} {
		rc, err := tg.GetRange(t.Context(), "r", off, 1)
		if err == nil {
			rc.Close()
		}
		wantErr(t, fmt.Sprintf("GetRange(r, %d, 1)", off), err, target.ErrInvalidRange)
	}
	_, err := tg.GetRange(t.Context(), "missing", 0, 1)
	wantErr(t, "GetRange(missing)", err, target.ErrNotFound)
}

func testStat(t *testing.T, tg target.Target) {
	data := Data(1, 12345)
	before := time.Now().Add(-time.Hour) // generous: the target's clock may differ
	Put(t, tg, "packs/ab/s", data)
	info, err := tg.Stat(t.Context(), "packs/ab/s")
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if info.Name != "packs/ab/s" || info.Size != 12345 {
		t.Errorf("Stat = %q, %d bytes; want packs/ab/s, 12345", info.Name, info.Size)
	}
	if info.SHA256 != ([32]byte{}) && info.SHA256 != sha256.Sum256(data) {
		t.Errorf("Stat reports a wrong SHA256 %x", info.SHA256)
	}
	if info.ModTime.Before(before) {
		t.Errorf("ModTime = %v, want about now", info.ModTime)
	}
	_, err = tg.Stat(t.Context(), "packs/ab")
	wantErr(t, "Stat of a name prefix", err, target.ErrNotFound)
	_, err = tg.Stat(t.Context(), "missing")
	wantErr(t, "Stat(missing)", err, target.ErrNotFound)
	_, err = tg.Get(t.Context(), "missing")
	wantErr(t, "Get(missing)", err, target.ErrNotFound)
}

func testList(t *testing.T, tg target.Target) {
	// Chosen so that lexical order differs from a depth-first directory walk: '-' and '.'
	// sort before '/'.
	names := []string{
		"index/1", "packs/a-c", "packs/a.x", "packs/a/b", "packs/ab/01", "packs/ab/02-",
		"packs/ab/02/z", "packs/b", "packsx", "z",
	}
	sizes := map[string]int64{}
	for i, n := range slices.Backward(names) { // insertion order must not matter
		sizes[n] = int64(i * 10)
		Put(t, tg, n, Data(uint64(i), i*10))
	}
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"", names},
		{"packs/", names[1:8]},
		{"packs/a", names[1:7]},
		{"packs/ab/", names[4:7]},
		{"packs", names[1:9]},
		{"index/1", names[:1]},
		{"nope/", nil},
	} {
		var got []string
		err := tg.List(t.Context(), c.prefix, func(i target.Info) error {
			if i.Size != sizes[i.Name] {
				t.Errorf("List: %s has size %d, want %d", i.Name, i.Size, sizes[i.Name])
			}
			got = append(got, i.Name)
			return nil
		})
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("List(%q) = %q, %v; want %q", c.prefix, got, err, c.want)
		}
	}
}

func testListStops(t *testing.T, tg target.Target) {
	for i := range 5 {
		Put(t, tg, fmt.Sprintf("p/%d", i), []byte{byte(i)})
	}
	stop := errors.New("stop")
	calls := 0
	err := tg.List(t.Context(), "p/", func(target.Info) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 {
		t.Errorf("List = %v after %d calls; want fn's error after 2 calls", err, calls)
	}
}

func testDelete(t *testing.T, tg target.Target) {
	Put(t, tg, "packs/d", []byte("one"))
	Put(t, tg, "packs/keep", []byte("two"))
	if err := tg.Delete(t.Context(), "packs/d"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	AssertMissing(t, tg, "packs/d")
	AssertContent(t, tg, "packs/keep", []byte("two"))
	wantErr(t, "second Delete", tg.Delete(t.Context(), "packs/d"), target.ErrNotFound)
	wantErr(t, "Delete(missing)", tg.Delete(t.Context(), "missing"), target.ErrNotFound)
	wantErr(t, "Delete of a name prefix", tg.Delete(t.Context(), "packs"), target.ErrNotFound)
	Put(t, tg, "packs/d", []byte("three")) // the name is free again
	AssertContent(t, tg, "packs/d", []byte("three"))
}

func testLocked(t *testing.T, tg target.Target, o options) {
	ctx := t.Context()
	data := []byte("locked")
	notEnforced := o.lockNotEnforced
	for name, opts := range map[string]target.PutOptions{
		"retained": {RetainUntil: time.Now().Add(time.Hour)},
		"held":     {LegalHold: true},
	} {
		opts.SHA256 = sha256.Sum256(data)
		err := tg.Put(ctx, name, bytes.NewReader(data), int64(len(data)), opts)
		if o.lockUnsupported != "" {
			t.Logf("lock on %s not supported by this backend: %s", name, o.lockUnsupported)
			wantErr(t, "Put("+name+") with a lock", err, target.ErrPermanent)
			AssertMissing(t, tg, name)
			continue
		}
		if err != nil {
			t.Fatalf("Put(%s): %v", name, err)
		}
		if notEnforced != "" {
			t.Logf("lock on %s not enforced by this backend: %s", name, notEnforced)
			AssertContent(t, tg, name, data)
			continue
		}
		wantErr(t, "Delete("+name+")", tg.Delete(ctx, name), target.ErrLocked)
		AssertContent(t, tg, name, data)
	}
}

func testContextCancelled(t *testing.T, tg target.Target) {
	Put(t, tg, "there", []byte("x"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	wantErr(t, "Put", put(ctx, tg, "new", []byte("x")), context.Canceled)
	_, err := tg.Get(ctx, "there")
	wantErr(t, "Get", err, context.Canceled)
	_, err = tg.GetRange(ctx, "there", 0, 1)
	wantErr(t, "GetRange", err, context.Canceled)
	_, err = tg.Stat(ctx, "there")
	wantErr(t, "Stat", err, context.Canceled)
	wantErr(t, "List", tg.List(ctx, "", func(target.Info) error { return nil }), context.Canceled)
	wantErr(t, "Delete", tg.Delete(ctx, "there"), context.Canceled)
	AssertMissing(t, tg, "new")
	AssertContent(t, tg, "there", []byte("x"))
}

func testCancelDuringPut(t *testing.T, tg target.Target) {
	data := Data(1, 4<<20)
	ctx, cancel := context.WithCancel(t.Context())
	r := &hookReader{r: bytes.NewReader(data), after: 1 << 20, hook: cancel}
	err := tg.Put(ctx, "c", r, int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)})
	wantErr(t, "Put cancelled midway", err, context.Canceled)
	AssertMissing(t, tg, "c")
}

func testFailingReader(t *testing.T, tg target.Target) {
	data := Data(1, 3<<20)
	boom := errors.New("disk on fire")
	r := &hookReader{r: bytes.NewReader(data), after: 1 << 20, fail: boom}
	if err := tg.Put(t.Context(), "f", r, int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)}); err == nil {
		t.Error("Put with a failing reader succeeded")
	}
	AssertMissing(t, tg, "f")
	Put(t, tg, "f", data)
	AssertContent(t, tg, "f", data)
}

func testConcurrentPuts(t *testing.T, tg target.Target) {
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = put(t.Context(), tg, fmt.Sprintf("c/%02d", i), Data(uint64(i), 10000+i)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Put c/%02d: %v", i, err)
			continue
		}
		AssertContent(t, tg, fmt.Sprintf("c/%02d", i), Data(uint64(i), 10000+i))
	}
	if got := listNames(t, tg, "c/"); len(got) != n {
		t.Errorf("List shows %d objects, want %d", len(got), n)
	}
}

func testConcurrentSameName(t *testing.T, tg target.Target) {
	const n = 8
	data := Data(7, 1<<20)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = put(t.Context(), tg, "same", data) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, target.ErrExists):
			t.Errorf("concurrent Put: %v, want nil or ErrExists", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent Puts of one name succeeded, want exactly 1", ok, n)
	}
	AssertContent(t, tg, "same", data)
}

// hookReader reads from r; once more than after bytes were read it calls hook (if set) and
// fails with fail (if set). Seek rewinds it fully, so a retried Put sees the same behaviour.
type hookReader struct {
	r     io.ReadSeeker
	after int64
	hook  func()
	fail  error
	n     int64
}

func (h *hookReader) Read(p []byte) (int, error) {
	if h.n >= h.after {
		if h.hook != nil {
			h.hook()
		}
		if h.fail != nil {
			return 0, h.fail
		}
	}
	if h.n < h.after { // stop exactly at the threshold
		p = p[:min(int64(len(p)), h.after-h.n)]
	}
	n, err := h.r.Read(p)
	h.n += int64(n)
	return n, err
}

func (h *hookReader) Seek(off int64, whence int) (int64, error) {
	pos, err := h.r.Seek(off, whence)
	h.n = pos
	return pos, err
}
