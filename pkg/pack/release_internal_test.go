package pack

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"testing"
	"unsafe"
)

// drainPackBufs empties the free list, so that a test sees only the buffers it released.
func drainPackBufs() {
	for {
		select {
		case <-packBufs:
		default:
			return
		}
	}
}

func sealedItems(prefix string, n, size int) []Item {
	items := make([]Item, n)
	for i := range items {
		items[i] = Item{ID: fmt.Sprintf("%s-%03d", prefix, i), Customer: "pa", Seq: uint64(i + 1),
			Sealed: bytes.Repeat([]byte{byte(i + 1)}, size)}
	}
	return items
}

// checkBuilt fails unless b holds items' bytes in order with the matching checksum.
func checkBuilt(t *testing.T, b Built, items []Item) {
	t.Helper()
	var want []byte
	for _, it := range items {
		want = append(want, it.Sealed...)
	}
	if !bytes.Equal(b.Data, want) {
		t.Fatalf("pack data differs from its items (%d bytes, want %d)", len(b.Data), len(want))
	}
	if b.Sum != sha256.Sum256(want) || b.Manifest.Size != int64(len(want)) {
		t.Fatal("pack checksum or size does not match its items")
	}
}

func TestReleasedBufferIsReusedWithoutOldBytes(t *testing.T) {
	drainPackBufs()
	first := Build("c", sealedItems("a", 64, 1024))
	mem := unsafe.SliceData(first.Data)
	first.Release()
	if first.Data != nil {
		t.Fatal("Release left Data set")
	}
	first.Release() // a second call is harmless

	// A smaller pack reuses the memory and holds only its own bytes.
	items := sealedItems("b", 10, 700)
	second := Build("c", items)
	if unsafe.SliceData(second.Data) != mem {
		t.Fatal("the released buffer was not reused")
	}
	checkBuilt(t, second, items)

	// A larger one than any kept buffer gets new memory, and is whole.
	second.Release()
	items = sealedItems("c", 100, 1024)
	third := Build("c", items)
	if unsafe.SliceData(third.Data) == mem {
		t.Fatal("a buffer too small for the pack was used")
	}
	checkBuilt(t, third, items)
}

func TestOversizedBufferIsNotKept(t *testing.T) {
	drainPackBufs()
	big := Built{Data: make([]byte, 1, maxPooledPack+1)}
	mem := unsafe.SliceData(big.Data)
	big.Release()
	if b := packBuf(1); unsafe.SliceData(b) == mem {
		t.Fatal("a buffer over maxPooledPack was kept")
	}
}

func TestFreeListIsBounded(t *testing.T) {
	drainPackBufs()
	for range 3 * cap(packBufs) {
		b := Built{Data: make([]byte, 0, 1024)}
		b.Release()
	}
	if n := len(packBufs); n != cap(packBufs) {
		t.Fatalf("free list holds %d buffers, want its bound %d", n, cap(packBufs))
	}
}
