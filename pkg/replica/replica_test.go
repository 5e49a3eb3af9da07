package replica_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/replica"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/faulty"
	"github.com/custos-dev/custos/pkg/target/fs"
	"github.com/custos-dev/custos/pkg/target/mem"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const name = "packs/ab/abcdef"

// bundle holds the targets of one test: faulty wrappers over in-memory targets, so faults can
// be switched on per target.
type bundle struct {
	faults  []*faulty.Target
	targets []target.Target
}

func setup(t *testing.T, labels ...string) *bundle {
	t.Helper()
	if len(labels) == 0 {
		labels = []string{"a", "b", "c"}
	}
	b := &bundle{}
	for _, l := range labels {
		f := faulty.New(mem.New(mem.WithLabel(l)))
		b.faults = append(b.faults, f)
		b.targets = append(b.targets, f)
	}
	return b
}

func write(ctx context.Context, targets []target.Target, data []byte) []replica.Result {
	return replica.Write(ctx, targets, name, int64(len(data)), sha256.Sum256(data), replica.BytesSource(data), target.PutOptions{})
}

func TestWrite(t *testing.T) {
	t.Parallel()
	b := setup(t)
	data := targettest.Data(1, 200_000)
	res := write(t.Context(), b.targets, data)
	if len(res) != 3 || replica.Durable(res) != 3 || replica.Err(res) != nil {
		t.Fatalf("results %+v", res)
	}
	for i, r := range res {
		if r.Target != b.targets[i].Name() || r.Existed {
			t.Fatalf("result %d = %+v, want target %s, newly written", i, r, b.targets[i].Name())
		}
		targettest.AssertContent(t, b.targets[i], name, data)
	}
	if res := write(t.Context(), nil, data); len(res) != 0 || replica.Durable(res) != 0 || replica.Err(res) != nil {
		t.Fatalf("no targets: %+v", res)
	}
}

// barrier is a target whose Put waits until every Put of the test has started, so Write
// completes only if it writes to all targets at once.
type barrier struct {
	target.Target
	wg *sync.WaitGroup
}

func (b barrier) Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	b.wg.Done()
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		return errors.New("barrier: the other writes never started; Write is not parallel")
	}
	return b.Target.Put(ctx, name, r, size, opts)
}

func TestWriteIsParallel(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	var targets []target.Target
	for i := range 8 {
		wg.Add(1)
		targets = append(targets, barrier{Target: mem.New(mem.WithLabel(fmt.Sprint(i))), wg: &wg})
	}
	if res := write(t.Context(), targets, []byte("x")); replica.Durable(res) != len(targets) {
		t.Fatal(replica.Err(res))
	}
}

// A name already holding the same bytes counts as written (design.md 5, rule 6).
func TestWriteIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	data := []byte("pack bytes")
	targettest.Put(t, b.targets[1], name, data) // an earlier attempt reached one target
	res := write(t.Context(), b.targets, data)
	if replica.Durable(res) != 3 {
		t.Fatal(replica.Err(res))
	}
	if res[0].Existed || !res[1].Existed || res[2].Existed {
		t.Fatalf("Existed flags %v %v %v, want false true false", res[0].Existed, res[1].Existed, res[2].Existed)
	}
	res = write(t.Context(), b.targets, data)
	for _, r := range res {
		if r.Err != nil || !r.Existed {
			t.Fatalf("second write: %+v", r)
		}
	}
}

// A name holding other bytes is a conflict for that target only; the object stays untouched.
func TestWriteConflict(t *testing.T) {
	t.Parallel()
	for _, existing := range [][]byte{[]byte("other bytes!"), []byte("other"), nil} {
		t.Run(fmt.Sprintf("%d bytes", len(existing)), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			data := []byte("pack bytes!!") // as long as the first existing object
			targettest.Put(t, b.targets[2], name, existing)
			res := write(t.Context(), b.targets, data)
			if replica.Durable(res) != 2 || res[0].Err != nil || res[1].Err != nil {
				t.Fatalf("results %+v", res)
			}
			if err := res[2].Err; !errors.Is(err, replica.ErrConflict) || !strings.Contains(err.Error(), b.targets[2].Name()) {
				t.Fatalf("conflicting target: %v, want ErrConflict naming %s", err, b.targets[2].Name())
			}
			if !errors.Is(replica.Err(res), replica.ErrConflict) {
				t.Fatal("Err does not carry the conflict")
			}
			targettest.AssertContent(t, b.targets[2], name, existing)
		})
	}
}

// One failing target never stops or fails the others.
func TestWriteFailureIsolated(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault func(*faulty.Target)
		want  error
	}{
		{"down", (*faulty.Target).Down, faulty.ErrUnavailable},
		{"put fails", func(f *faulty.Target) { f.FailNextPuts(1) }, faulty.ErrInjected},
		{"connection drops mid-upload", func(f *faulty.Target) { f.FailPutAfterBytes(1000) }, faulty.ErrInjected},
		{"slower than the deadline", func(f *faulty.Target) { f.Delay(time.Minute) }, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			tc.fault(b.faults[1])
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			data := targettest.Data(2, 100_000)
			res := write(ctx, b.targets, data)
			if replica.Durable(res) != 2 || res[0].Err != nil || res[2].Err != nil {
				t.Fatalf("healthy targets: %+v %+v", res[0], res[2])
			}
			err := res[1].Err
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), b.targets[1].Name()) || !strings.Contains(err.Error(), name) {
				t.Fatalf("failed target: %v, want %v naming the target and the object", err, tc.want)
			}
			if err := replica.Err(res); !errors.Is(err, tc.want) {
				t.Fatalf("Err = %v", err)
			}
			targettest.AssertContent(t, b.targets[0], name, data)
			targettest.AssertContent(t, b.targets[2], name, data)
			b.faults[1].Reset()
			targettest.AssertMissing(t, b.targets[1], name) // never a partial object
		})
	}
}

func TestWriteChecksumMismatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	data := []byte("pack bytes")
	res := replica.Write(t.Context(), b.targets, name, int64(len(data)), sha256.Sum256([]byte("other")), replica.BytesSource(data), target.PutOptions{})
	for i, r := range res {
		if !errors.Is(r.Err, target.ErrChecksumMismatch) {
			t.Fatalf("target %d: %v, want ErrChecksumMismatch", i, r.Err)
		}
		targettest.AssertMissing(t, b.targets[i], name)
	}
}

// closingReader records that it was closed.
type closingReader struct {
	*bytes.Reader
	closed *atomic.Int32
}

func (c closingReader) Close() error { c.closed.Add(1); return nil }

// Each target gets its own reader from the source, closed after the write.
func TestWriteSource(t *testing.T) {
	t.Parallel()
	b := setup(t)
	data := []byte("pack bytes")
	var opened, closed atomic.Int32
	src := func() (io.ReadSeeker, error) {
		opened.Add(1)
		return closingReader{bytes.NewReader(data), &closed}, nil
	}
	res := replica.Write(t.Context(), b.targets, name, int64(len(data)), sha256.Sum256(data), src, target.PutOptions{})
	if replica.Durable(res) != 3 || opened.Load() != 3 || closed.Load() != 3 {
		t.Fatalf("durable %d, sources opened %d and closed %d; want 3 each", replica.Durable(res), opened.Load(), closed.Load())
	}
	boom := errors.New("spool file gone")
	res = replica.Write(t.Context(), b.targets, "other", 1, [32]byte{}, func() (io.ReadSeeker, error) { return nil, boom }, target.PutOptions{})
	for _, r := range res {
		if !errors.Is(r.Err, boom) {
			t.Fatalf("source error: %+v", r)
		}
	}
}

func TestWriteOptionsReachTarget(t *testing.T) {
	t.Parallel()
	m := mem.New(mem.WithClock(func() time.Time { return time.Unix(1000, 0) }))
	data := []byte("locked")
	opts := target.PutOptions{RetainUntil: time.Unix(5000, 0), SHA256: sha256.Sum256([]byte("ignored: Write sets it"))}
	if res := replica.Write(t.Context(), []target.Target{m}, name, int64(len(data)), sha256.Sum256(data), replica.BytesSource(data), opts); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if err := m.Delete(t.Context(), name); !errors.Is(err, target.ErrLocked) {
		t.Fatalf("Delete of a retained object = %v, want ErrLocked", err)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	data := targettest.Data(3, 70_000)
	sum := sha256.Sum256(data)
	flipped := bytes.Clone(data)
	flipped[len(flipped)/2] ^= 1
	newFS := func(t *testing.T) target.Target {
		tg, err := fs.New(t.TempDir(), fs.WithLabel("disk"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tg.Close() })
		return tg
	}
	// mem reports checksums in Stat; fs does not, so Verify reads the object.
	for kind, newTarget := range map[string]func(*testing.T) target.Target{
		"mem": func(*testing.T) target.Target { return mem.New() },
		"fs":  newFS,
	} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			for _, tc := range []struct {
				name    string
				stored  []byte // nil: nothing stored
				corrupt bool   // reads return a rotted copy
				want    bool
				wantErr error
			}{
				{"same bytes", data, false, true, nil},
				{"one bit differs", flipped, false, false, nil},
				{"shorter", data[:len(data)-1], false, false, nil},
				{"longer", append(bytes.Clone(data), 0), false, false, nil},
				{"missing", nil, false, false, target.ErrNotFound},
			} {
				t.Run(tc.name, func(t *testing.T) {
					tg := faulty.New(newTarget(t))
					if tc.stored != nil {
						targettest.Put(t, tg, name, tc.stored)
					}
					got, err := replica.Verify(t.Context(), tg, name, int64(len(data)), sum)
					if got != tc.want || !errors.Is(err, tc.wantErr) {
						t.Fatalf("Verify = %v, %v; want %v, %v", got, err, tc.want, tc.wantErr)
					}
				})
			}
		})
	}
	t.Run("rotted copy", func(t *testing.T) {
		t.Parallel()
		tg := faulty.New(newFS(t))
		targettest.Put(t, tg, name, data)
		tg.Corrupt(name)
		if ok, err := replica.Verify(t.Context(), tg, name, int64(len(data)), sum); ok || err != nil {
			t.Fatalf("Verify of a rotted copy = %v, %v; want false", ok, err)
		}
	})
	t.Run("unreadable", func(t *testing.T) {
		t.Parallel()
		tg := faulty.New(newFS(t))
		targettest.Put(t, tg, name, data)
		tg.Down()
		if ok, err := replica.Verify(t.Context(), tg, name, int64(len(data)), sum); ok || !errors.Is(err, faulty.ErrUnavailable) {
			t.Fatalf("Verify of an unreachable target = %v, %v; want the target's error", ok, err)
		}
	})
}

// An existing copy that fails verification (here: it rots between Stat and Get on a target
// without checksums) is a conflict, not a success.
func TestWriteExistingRottedCopy(t *testing.T) {
	t.Parallel()
	tg, err := fs.New(t.TempDir(), fs.WithLabel("disk"))
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	f := faulty.New(tg)
	data := targettest.Data(4, 1000)
	targettest.Put(t, f, name, data)
	f.Corrupt(name)
	res := write(t.Context(), []target.Target{f}, data)
	if !errors.Is(res[0].Err, replica.ErrConflict) || res[0].Existed {
		t.Fatalf("write over a rotted copy = %+v, want ErrConflict", res[0])
	}
}

func TestDurableAndErr(t *testing.T) {
	t.Parallel()
	e1, e2 := errors.New("one"), errors.New("two")
	for _, tc := range []struct {
		res     []replica.Result
		durable int
		errs    []error
	}{
		{nil, 0, nil},
		{[]replica.Result{{Target: "a"}, {Target: "b", Existed: true}}, 2, nil},
		{[]replica.Result{{Target: "a", Err: e1}, {Target: "b"}, {Target: "c", Err: e2}}, 1, []error{e1, e2}},
	} {
		if got := replica.Durable(tc.res); got != tc.durable {
			t.Errorf("Durable(%v) = %d, want %d", tc.res, got, tc.durable)
		}
		err := replica.Err(tc.res)
		if (err == nil) != (len(tc.errs) == 0) {
			t.Errorf("Err(%v) = %v", tc.res, err)
		}
		for _, e := range tc.errs {
			if !errors.Is(err, e) {
				t.Errorf("Err(%v) = %v, does not hold %v", tc.res, err, e)
			}
		}
	}
}

// WriteTraced records one client span per target, marked as failed where the write failed.
func TestWriteTraced(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())
	b := setup(t)
	data := []byte("pack bytes")
	targettest.Put(t, b.targets[0], name, data)
	b.faults[2].Down()
	res := replica.WriteTraced(t.Context(), tp.Tracer("test"), b.targets, name, int64(len(data)), sha256.Sum256(data), replica.BytesSource(data), target.PutOptions{})
	if replica.Durable(res) != 2 {
		t.Fatal(replica.Err(res))
	}
	got := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans.Ended() {
		got[s.Name()] = s
	}
	if len(got) != 3 {
		t.Fatalf("%d spans, want 3", len(got))
	}
	for i, tg := range b.targets {
		s := got["target.write "+tg.Name()]
		if s == nil {
			t.Fatalf("no span for %s", tg.Name())
		}
		attrs := map[string]string{}
		for _, kv := range s.Attributes() {
			attrs[string(kv.Key)] = kv.Value.Emit()
		}
		if attrs["custos.target"] != tg.Name() || attrs["custos.object"] != name || attrs["custos.existed"] != fmt.Sprint(i == 0) {
			t.Errorf("span %s attributes %v", s.Name(), attrs)
		}
		if failed := s.Status().Code == codes.Error; failed != (i == 2) {
			t.Errorf("span %s status %v", s.Name(), s.Status())
		}
	}
}
