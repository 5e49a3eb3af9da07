package pack_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/custos-dev/custos/pkg/pack"
)

// Seal one record for a customer and open it again. In Custos the data key comes from
// keys.Store.DataKey(pseudonym) and the pseudonym and item id from keys.LocalKMS.Pseudonym.
func ExampleCodec_SealItem() {
	codec, err := pack.NewCodec()
	if err != nil {
		panic(err)
	}
	defer codec.Close()
	dek := bytes.Repeat([]byte{7}, 32)
	const pseudonym, class, itemID = "p5e0c0000000000000000000000000000", "critical", "p1d2e0000000000000000000000000000"
	meta := pack.ItemMeta{Tenant: "shop", CustomerID: "c-0042", RecordKey: "orders/17",
		EventID: "ev-1", EventTime: time.Date(2026, 11, 1, 9, 30, 0, 0, time.UTC)}

	sealed, err := codec.SealItem(dek, pseudonym, class, itemID, meta, []byte(`{"total":99}`))
	if err != nil {
		panic(err)
	}
	again, _ := codec.SealItem(dek, pseudonym, class, itemID, meta, []byte(`{"total":99}`))
	fmt.Println("deterministic:", bytes.Equal(sealed, again))

	got, data, err := codec.OpenItem(dek, pseudonym, class, itemID, sealed)
	fmt.Println(got.CustomerID, got.RecordKey, got.Size, string(data), err)

	_, _, err = codec.OpenItem(dek, pseudonym, "important", itemID, sealed)
	fmt.Println(err)
	// Output:
	// deterministic: true
	// c-0042 orders/17 12 {"total":99} <nil>
	// crypto: message authentication failed
}

// A large record is encrypted from a reader and read back as a stream, in constant memory.
func ExampleStreamItem() {
	dek := bytes.Repeat([]byte{7}, 32)
	const pseudonym, class, itemID = "p5e0c0000000000000000000000000000", "important", "p9f3a0000000000000000000000000000"
	record := strings.Repeat("line of a large export\n", 3)
	meta := pack.ItemMeta{Tenant: "shop", CustomerID: "c-0042", RecordKey: "export", Size: int64(len(record))}

	var spool bytes.Buffer // a spool file in the worker
	if err := pack.StreamItem(&spool, dek, pseudonym, class, itemID, meta, strings.NewReader(record)); err != nil {
		panic(err)
	}

	ir, err := pack.OpenItemStream(&spool, dek, pseudonym, class, itemID)
	if err != nil {
		panic(err)
	}
	defer ir.Close()
	fmt.Println(ir.Meta.RecordKey, ir.Meta.Size)
	// Trust the bytes only once the copy ends without an error.
	if _, err := io.Copy(os.Stdout, ir); err != nil {
		panic(err)
	}
	// Output:
	// export 69
	// line of a large export
	// line of a large export
	// line of a large export
}

// Gather sealed items into a pack, name it and seal its manifest.
func ExampleBuild() {
	items := []pack.Item{
		{ID: "pb", Customer: "p5e0c", Seq: 12, Sealed: []byte("second item's ciphertext")},
		{ID: "pa", Customer: "p77aa", Seq: 11, Sealed: []byte("first item's ciphertext")},
	}
	b := pack.Build("critical", items)
	fmt.Println(pack.ObjectName(b.Manifest.Pack))
	fmt.Println(pack.ManifestName(b.Manifest.Pack))
	for _, e := range b.Manifest.Items {
		fmt.Println(e.ID, e.Seq, e.Offset, e.Length)
	}

	catalogKey := bytes.Repeat([]byte{9}, 32) // keys.Store.DataKey(pack.CatalogScope)
	sealed, err := pack.SealManifest(catalogKey, b.Manifest)
	if err != nil {
		panic(err)
	}
	m, err := pack.OpenManifest(catalogKey, b.Manifest.Pack, sealed)
	fmt.Println(m.Size, len(m.Items), err)
	// Output:
	// packs/dc/dcff11916b47c797a4ccedc596f31188
	// manifests/dc/dcff11916b47c797a4ccedc596f31188
	// pa 11 0 23
	// pb 12 23 24
	// 47 2 <nil>
}
