// Package replica writes one object to several targets in parallel and says, per target,
// whether the object is durable there. It makes create-only writes idempotent: a name already
// taken by the same bytes counts as written.
package replica

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/custos-dev/custos/pkg/target"
)

// ErrConflict means a target holds different bytes under the name.
var ErrConflict = errors.New("replica: a different object already exists under this name")

// Source opens a fresh reader over the object for one target; each target gets its own.
type Source func() (io.ReadSeeker, error)

// BytesSource serves an object held in memory.
func BytesSource(b []byte) Source {
	return func() (io.ReadSeeker, error) { return bytes.NewReader(b), nil }
}

// Result is the outcome for one target.
type Result struct {
	Target  string
	Err     error // nil when the object is durable there
	Existed bool  // the object was already there with the same checksum
}

// Write stores the object under name in every target in parallel and returns one result per
// target, in the order given. It never returns early: one slow or failed target does not stop
// the others.
func Write(ctx context.Context, targets []target.Target, name string, size int64, sum [32]byte, src Source, opts target.PutOptions) []Result {
	return WriteTraced(ctx, noop.NewTracerProvider().Tracer(""), targets, name, size, sum, src, opts)
}

// WriteTraced is Write with one client span per target write.
func WriteTraced(ctx context.Context, tr trace.Tracer, targets []target.Target, name string, size int64, sum [32]byte, src Source, opts target.PutOptions) []Result {
	return WriteQuorum(ctx, tr, targets, name, size, sum, src, opts, Quorum{})
}

// ErrAbandoned marks a target write given up because enough other targets were durable (see
// Quorum). The object may be missing there: the caller records it for repair.
var ErrAbandoned = errors.New("replica: write abandoned after quorum")

// Quorum lets a write finish before every target answers, so that one target that is down or
// slow does not hold up the others.
type Quorum struct {
	// Min is how many targets must hold the object; 0 means all of them (wait for every target).
	Min int
	// Grace is how long to keep waiting for the remaining targets once Min are durable; their
	// writes are then cancelled and reported with ErrAbandoned.
	Grace time.Duration
}

// WriteQuorum is WriteTraced that stops waiting Grace after q.Min targets hold the object.
// Cancelled writes leave nothing under name (Put is atomic).
func WriteQuorum(ctx context.Context, tr trace.Tracer, targets []target.Target, name string, size int64, sum [32]byte, src Source, opts target.PutOptions, q Quorum) []Result {
	opts.SHA256 = sum
	res := make([]Result, len(targets))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type done struct {
		i int
		r Result
	}
	ch := make(chan done, len(targets))
	for i, t := range targets {
		go func() {
			ctx, span := tr.Start(wctx, "target.write "+t.Name(), trace.WithSpanKind(trace.SpanKindClient),
				trace.WithAttributes(attribute.String("custos.target", t.Name()), attribute.String("custos.target.kind", t.Kind()),
					attribute.String("custos.object", name), attribute.Int64("custos.bytes", size)))
			r := writeOne(ctx, t, name, size, sum, src, opts)
			span.SetAttributes(attribute.Bool("custos.existed", r.Existed))
			if r.Err != nil {
				span.RecordError(r.Err)
				span.SetStatus(codes.Error, "write failed")
			}
			span.End()
			ch <- done{i, r}
		}()
	}
	need := q.Min
	if need <= 0 || need > len(targets) {
		need = len(targets)
	}
	var grace <-chan time.Time
	ok := 0
	for n := 0; n < len(targets); {
		select {
		case d := <-ch:
			res[d.i] = d.r
			n++
			if d.r.Err == nil {
				ok++
				if ok == need && n < len(targets) {
					grace = time.After(q.Grace)
				}
			}
			continue
		case <-grace:
		}
		// Grace is over: cancel the stragglers and collect what they report, as abandoned.
		cancel()
		for ; n < len(targets); n++ {
			d := <-ch
			if d.r.Err != nil {
				d.r.Err = fmt.Errorf("%w: %w", ErrAbandoned, d.r.Err)
			}
			res[d.i] = d.r
		}
	}
	return res
}

func writeOne(ctx context.Context, t target.Target, name string, size int64, sum [32]byte, src Source, opts target.PutOptions) Result {
	r := Result{Target: t.Name()}
	rs, err := src()
	if err != nil {
		r.Err = err
		return r
	}
	if c, ok := rs.(io.Closer); ok {
		defer c.Close()
	}
	err = t.Put(ctx, name, rs, size, opts)
	if errors.Is(err, target.ErrExists) {
		same, verr := Verify(ctx, t, name, size, sum)
		switch {
		case verr != nil:
			err = fmt.Errorf("verify existing %s on %s: %w", name, t.Name(), verr)
		case same:
			err, r.Existed = nil, true
		default:
			err = fmt.Errorf("%s on %s: %w", name, t.Name(), ErrConflict)
		}
	} else if err != nil {
		err = fmt.Errorf("put %s to %s: %w", name, t.Name(), err)
	}
	r.Err = err
	return r
}

// Verify reports whether the object under name has the given size and SHA-256. It uses the
// checksum the target reports when it has one and reads the object otherwise.
func Verify(ctx context.Context, t target.Reader, name string, size int64, sum [32]byte) (bool, error) {
	info, err := t.Stat(ctx, name)
	if err != nil {
		return false, err
	}
	if info.Size != size {
		return false, nil
	}
	if info.SHA256 != ([32]byte{}) {
		return info.SHA256 == sum, nil
	}
	rc, err := t.Get(ctx, name)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return false, err
	}
	return [32]byte(h.Sum(nil)) == sum, nil
}

// Durable counts the targets that hold the object.
func Durable(res []Result) int {
	n := 0
	for _, r := range res {
		if r.Err == nil {
			n++
		}
	}
	return n
}

// Err joins the errors of the targets that failed.
func Err(res []Result) error {
	var errs []error
	for _, r := range res {
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
	}
	return errors.Join(errs...)
}
