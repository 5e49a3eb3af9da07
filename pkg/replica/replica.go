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
	"sync"

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
	opts.SHA256 = sum
	res := make([]Result, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, span := tr.Start(ctx, "target.write "+t.Name(), trace.WithSpanKind(trace.SpanKindClient),
				trace.WithAttributes(attribute.String("custos.target", t.Name()), attribute.String("custos.target.kind", t.Kind()),
					attribute.String("custos.object", name), attribute.Int64("custos.bytes", size)))
			res[i] = writeOne(ctx, t, name, size, sum, src, opts)
			span.SetAttributes(attribute.Bool("custos.existed", res[i].Existed))
			if res[i].Err != nil {
				span.RecordError(res[i].Err)
				span.SetStatus(codes.Error, "write failed")
			}
			span.End()
		}()
	}
	wg.Wait()
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
