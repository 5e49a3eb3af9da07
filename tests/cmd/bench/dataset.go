package main

import (
	"bytes"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
)

// The peer section's data set: n customer records of about 10 KiB of JSON each, recordsPer to
// a customer. Each record's bytes depend only on its index and version, so the file tree restic
// backs up, the events Custos's event path gets and the rows its snapshot path reads hold the
// same bytes.
const (
	recordBytes = 10 << 10
	recordsPer  = 20
)

type dataset struct {
	dir   string // dir/<customer>/<record>.json
	n     int
	bytes int64 // total record bytes of version 0
}

func customerOf(i int) string { return fmt.Sprintf("cust-%05d", i/recordsPer) }
func recordName(i int) string { return fmt.Sprintf("rec-%07d.json", i) }

func (d *dataset) path(i int) string {
	return filepath.Join(d.dir, customerOf(i), recordName(i))
}

// customerRecord is JSON shaped like a CRM export: a profile, then orders until the size is
// reached. Random values from a seeded generator make it compress about as real records do.
func customerRecord(i, version int) []byte {
	r := mrand.New(mrand.NewPCG(uint64(i), uint64(version)+7))
	var b bytes.Buffer
	b.Grow(recordBytes + 256)
	fmt.Fprintf(&b, `{"customer_id":%q,"record":%q,"version":%d,"name":"Customer %d","email":"c%d@example.com",`+
		`"address":{"street":"%d Main Street","city":"City %d","zip":"%05d"},"orders":[`,
		customerOf(i), recordName(i), version, r.IntN(1e6), r.IntN(1e9), r.IntN(999)+1, r.IntN(500), r.IntN(1e5))
	for k := 0; ; k++ {
		if k > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"order":"ORD-%09d","sku":"SKU-%06d","qty":%d,"price":%d.%02d,"status":%q,"at":"2026-%02d-%02dT%02d:%02d:%02dZ"}`,
			r.IntN(1e9), r.IntN(1e6), r.IntN(9)+1, r.IntN(500), r.IntN(100),
			[]string{"paid", "shipped", "returned", "open"}[r.IntN(4)],
			r.IntN(12)+1, r.IntN(28)+1, r.IntN(24), r.IntN(60), r.IntN(60))
		if b.Len() >= recordBytes-2 {
			break
		}
	}
	b.WriteString("]}")
	return b.Bytes()
}

// writeDataset writes records 0..n-1 (version 0) under dir.
func writeDataset(dir string, n int) (*dataset, error) {
	d := &dataset{dir: dir, n: n}
	for i := range n {
		if i%recordsPer == 0 {
			if err := os.MkdirAll(filepath.Join(dir, customerOf(i)), 0o755); err != nil {
				return nil, err
			}
		}
		rec := customerRecord(i, 0)
		if err := os.WriteFile(d.path(i), rec, 0o644); err != nil {
			return nil, err
		}
		d.bytes += int64(len(rec))
	}
	return d, nil
}

// changed is the 1 % of records the incremental runs rewrite: every hundredth.
func (d *dataset) changed() []int {
	var idx []int
	for i := 0; i < d.n; i += 100 {
		idx = append(idx, i)
	}
	return idx
}

// modify rewrites the changed records as version 1 and returns their bytes.
func (d *dataset) modify() (int64, error) {
	var n int64
	for _, i := range d.changed() {
		rec := customerRecord(i, 1)
		if err := os.WriteFile(d.path(i), rec, 0o644); err != nil {
			return 0, err
		}
		n += int64(len(rec))
	}
	return n, nil
}
