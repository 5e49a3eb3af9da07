package faulty_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/faulty"
	"github.com/custos-dev/custos/pkg/target/fs"
	"github.com/custos-dev/custos/pkg/target/mem"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	targettest.Run(t, func(t *testing.T) target.Target { return faulty.New(mem.New()) })
}

func put(ctx context.Context, tg target.Target, name string, data []byte) error {
	return tg.Put(ctx, name, bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)})
}

func TestDownUp(t *testing.T) {
	f := faulty.New(mem.New())
	targettest.Put(t, f, "a", []byte("x"))
	f.Down()
	ctx := t.Context()
	_, getErr := f.Get(ctx, "a")
	_, statErr := f.Stat(ctx, "a")
	for what, err := range map[string]error{
		"Put": put(ctx, f, "b", []byte("y")), "Get": getErr, "Stat": statErr,
		"List": f.List(ctx, "", func(target.Info) error { return nil }), "Delete": f.Delete(ctx, "a"),
	} {
		if !errors.Is(err, faulty.ErrUnavailable) || errors.Is(err, target.ErrPermanent) {
			t.Errorf("%s while down = %v, want transient ErrUnavailable", what, err)
		}
	}
	f.Up()
	targettest.AssertContent(t, f, "a", []byte("x"))
	targettest.AssertMissing(t, f, "b")
}

func TestFailNextPuts(t *testing.T) {
	f := faulty.New(mem.New())
	f.FailNextPuts(2)
	for range 2 {
		if err := put(t.Context(), f, "a", []byte("x")); !errors.Is(err, faulty.ErrInjected) {
			t.Fatalf("Put = %v, want ErrInjected", err)
		}
	}
	targettest.Put(t, f, "a", []byte("x"))
}

// A Put cut off mid-stream must leave nothing visible, on every real implementation.
func TestFailPutAfterBytes(t *testing.T) {
	for name, newTarget := range map[string]func(t *testing.T) target.Target{
		"mem": func(*testing.T) target.Target { return mem.New() },
		"fs": func(t *testing.T) target.Target {
			tg, err := fs.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return tg
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := faulty.New(newTarget(t))
			data := targettest.Data(1, 1<<20)
			f.FailPutAfterBytes(1000)
			if err := put(t.Context(), f, "p", data); !errors.Is(err, faulty.ErrInjected) {
				t.Fatalf("Put = %v, want ErrInjected", err)
			}
			targettest.AssertMissing(t, f, "p")
			targettest.Put(t, f, "p", data) // one-shot
			targettest.AssertContent(t, f, "p", data)
		})
	}
}

func TestCorrupt(t *testing.T) {
	f := faulty.New(mem.New())
	data := []byte("0123456789")
	targettest.Put(t, f, "c", data)
	f.Corrupt("c")
	if got := targettest.Read(t, f, "c"); bytes.Equal(got, data) || !bytes.Equal(got[1:], data[1:]) {
		t.Errorf("Get = %q, want first byte flipped", got)
	}
	rc, err := f.GetRange(t.Context(), "c", 5, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, _ := io.ReadAll(rc); len(got) != 2 || got[0] == '5' || got[1] != '6' {
		t.Errorf("GetRange = %q, want first byte flipped", got)
	}
	f.Reset()
	targettest.AssertContent(t, f, "c", data)
}

func TestDelay(t *testing.T) {
	f := faulty.New(mem.New())
	f.Delay(time.Hour)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := f.Stat(ctx, "x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stat = %v, want the context's deadline", err)
	}
	f.Delay(time.Millisecond)
	start := time.Now()
	if _, err := f.Stat(t.Context(), "x"); !errors.Is(err, target.ErrNotFound) || time.Since(start) < time.Millisecond {
		t.Errorf("Stat = %v after %v", err, time.Since(start))
	}
}

func TestHoldPutsKeepsTheData(t *testing.T) {
	f := faulty.New(mem.New())
	f.HoldPuts()
	kept, reused := []byte("kept bytes"), []byte("reused bytes")
	for name, data := range map[string][]byte{"kept": kept, "reused": reused} {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		err := put(ctx, f, name, data)
		cancel()
		if !errors.Is(err, faulty.ErrInjected) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("held Put = %v, want ErrInjected after its context ended", err)
		}
	}
	copy(reused, "other bytes!") // the caller reuses the memory after Put returned
	changed, err := f.ReadHeld()
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 1 || changed[0] != "reused" {
		t.Fatalf("ReadHeld = %v, want [reused]", changed)
	}
	if changed, err := f.ReadHeld(); err != nil || len(changed) != 0 {
		t.Fatalf("second ReadHeld = %v, %v; want nothing held", changed, err)
	}
	targettest.AssertMissing(t, f, "kept")
	f.Reset()
	targettest.Put(t, f, "kept", kept)
}
