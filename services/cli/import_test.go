package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/target"
)

// importStack runs a broker and a worker on two fs targets and returns the config path and parts.
func importStack(t *testing.T) (string, *config.Parts) {
	t.Helper()
	cfgPath, parts, _ := workerStack(t, 5*time.Second)
	return cfgPath, parts
}

// checkRestored restores each customer and compares every record byte for byte.
func checkRestored(t *testing.T, parts *config.Parts, tenant string, want map[string]map[string][]byte) {
	t.Helper()
	readers := target.Readers(parts.Targets)
	r := &restore.Restorer{Index: parts.Index, Targets: readers, Keys: parts.Keys, Pseudonyms: parts.KMS}
	for cust, recs := range want {
		dir := t.TempDir()
		rep, err := r.Customer(context.Background(), tenant, cust, restore.Options{Out: dir})
		if err != nil || !rep.OK() || rep.Records != len(recs) {
			t.Fatalf("restore %s: %+v %v, want %d records", cust, rep, err, len(recs))
		}
		for key, data := range recs {
			got, err := os.ReadFile(restore.Path(dir, tenant, cust, key))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("restored %s/%s: %q (%v), want %q", cust, key, got, err, data)
			}
		}
	}
}

// An NDJSON import backs every line up, durable when the command returns, and each customer
// restores byte for byte: string data as its text, other JSON as written, base64 as decoded.
func TestBackupImportNDJSON(t *testing.T) {
	cfgPath, parts := importStack(t)
	bin := []byte{0, 1, 2, 0xff, '\n'}
	big := strings.Repeat("x", 300<<10) // over one event's records: split into several events
	lines := []string{
		`{"customer":"c-1","key":"profile","data":{"plan": "gold","n":[1,2]}}`,
		``,
		`{"customer":"c-1","key":"orders/7","data":"plain text\nwith a newline"}`,
		`{"customer":"c 2/ü","key":"blob","data_base64":"` + base64.StdEncoding.EncodeToString(bin) + `","content_type":"application/octet-stream"}`,
		`{"customer":"c-3","key":"a","data":"` + big[:200<<10] + `"}`,
		`{"customer":"c-3","key":"b","data":"` + big[:200<<10] + `"}`,
		`{"customer":"c-3","key":"c","data":"` + big[:200<<10] + `"}`,
		`{"customer":"c-3","key":"d","data":"` + big[:200<<10] + `"}`,
	}
	in := filepath.Join(t.TempDir(), "export.ndjson")
	if err := os.WriteFile(in, []byte(strings.Join(lines, "\n")), 0o600); err != nil { // no final newline
		t.Fatal(err)
	}
	out, err := execute(t, "backup", "import", in, "--config", cfgPath, "--class", "critical", "--tenant", "t1",
		"--requested-by", "alice@ops")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "imported 7 records") || !strings.Contains(out, "progress: 7/7 records") || strings.Contains(out, "c-1") {
		t.Fatalf("output:\n%s", out)
	}
	checkRestored(t, parts, "t1", map[string]map[string][]byte{
		"c-1":   {"profile": []byte(`{"plan": "gold","n":[1,2]}`), "orders/7": []byte("plain text\nwith a newline")},
		"c 2/ü": {"blob": bin},
		"c-3":   {"a": []byte(big[:200<<10]), "b": []byte(big[:200<<10]), "c": []byte(big[:200<<10]), "d": []byte(big[:200<<10])},
	})

	// Run again: the same events, de-duplicated by the broker; nothing new is stored.
	st, err := parts.JS.Stream(context.Background(), event.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	before := st.CachedInfo().State.LastSeq
	if _, err := execute(t, "backup", "import", in, "--config", cfgPath, "--class", "critical", "--tenant", "t1",
		"--requested-by", "alice@ops", "--no-wait"); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.LastSeq != before {
		t.Fatalf("a second identical import published %d new events", info.State.LastSeq-before)
	}
}

// A directory laid out as <customer>/<key> (a restore's tenant directory) imports back and
// restores byte for byte.
func TestBackupImportDirectory(t *testing.T) {
	cfgPath, parts := importStack(t)
	want := map[string]map[string][]byte{
		"c-1":     {"profile.json": []byte(`{"a":1}`), "orders/7": []byte("seven")},
		"c 2":     {"x": []byte{}},
		"..":      {"dots": []byte("escaped name")},
		"c-4/sub": {"k%": bytes.Repeat([]byte("z"), 100<<10)},
	}
	// Write the tree as custos restore lays it out, so escaping round-trips.
	root := t.TempDir()
	for cust, recs := range want {
		for key, data := range recs {
			p := restore.Path(root, "t1", cust, key)
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A nested directory below a customer joins the key with "/".
	nested := filepath.Join(root, "t1", "c-5", "invoices", "2026")
	if err := os.MkdirAll(nested, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(nested, "03"), []byte("march"), 0o600); err != nil {
		t.Fatal(err)
	}
	want["c-5"] = map[string][]byte{"invoices/2026/03": []byte("march")}
	out, err := execute(t, "backup", "import", filepath.Join(root, "t1"), "--config", cfgPath, "--class", "critical",
		"--tenant", "t1", "--requested-by", "alice@ops")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "imported 6 records") {
		t.Fatalf("output:\n%s", out)
	}
	checkRestored(t, parts, "t1", want)
}

// A malformed line stops the import with its line number, and nothing is published: not even
// the lines before it.
func TestBackupImportMalformedNDJSON(t *testing.T) {
	cfgPath, parts := importStack(t)
	good := `{"customer":"c-1","key":"k1","data":{"a":1}}`
	for _, tc := range []struct {
		name, bad, want string
	}{
		{"broken JSON", `{"customer":"c-1","key":"k2","data":{"a":`, "line 3: not a JSON object"},
		{"no key", `{"customer":"c-1","data":"x"}`, "line 3: no key"},
		{"no customer", `{"key":"k","data":"x"}`, "line 3: no customer"},
		{"no data", `{"customer":"c-1","key":"k"}`, "line 3: no data"},
		{"unknown field", `{"customer":"c-1","key":"k","data":1,"cust":"x"}`, `line 3: not a JSON object of customer, key, data: json: unknown field "cust"`},
		{"bad base64", `{"customer":"c-1","key":"k","data_base64":"***"}`, "line 3: data_base64 is not standard base64"},
		{"too large", `{"customer":"c-1","key":"k","data":"` + strings.Repeat("y", 300<<10) + `"}`, "line 3: "},
		{"two values", `{"customer":"c-1","key":"k","data":1} {}`, "line 3: more than one JSON value"},
	} {
		in := filepath.Join(t.TempDir(), "in.ndjson")
		if err := os.WriteFile(in, []byte(good+"\n"+good+"\n"+tc.bad+"\n"+good+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := execute(t, "backup", "import", in, "--config", cfgPath, "--class", "critical", "--tenant", "t1",
			"--requested-by", "alice@ops")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "c-1") {
			t.Errorf("%s: the error names the customer: %v", tc.name, err)
		}
	}
	st, err := parts.JS.Stream(context.Background(), event.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.LastSeq; n != 0 {
		t.Fatalf("%d events were published by imports that failed", n)
	}
}

func TestProgressLine(t *testing.T) {
	for _, tc := range []struct {
		rec, bytes int64
		el         time.Duration
		want       string
	}{
		{0, 0, time.Second, "progress: 0/100 records, 0.0/1.0 MB durable, 0 records/s, 0.0 MB/s"},
		{25, 250_000, 5 * time.Second, "progress: 25/100 records, 0.2/1.0 MB durable, 5 records/s, 0.1 MB/s, ETA 15s"},
		{100, 1_000_000, 10 * time.Second, "progress: 100/100 records, 1.0/1.0 MB durable, 10 records/s, 0.1 MB/s, done in 10s"},
	} {
		if got := progressLine(tc.rec, 100, tc.bytes, 1_000_000, tc.el); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}
