package disaster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/devstack"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/worker"
	"github.com/custos-dev/custos/tests/harness"
)

// The four targets of the class, named as in `custos demo --clouds`: every pack, manifest and
// erasure record goes to each of them.
var cloudStarts = []struct {
	name  string
	start func(ctx context.Context, dir string) (*devstack.Cloud, error)
}{
	{"s3", func(ctx context.Context, dir string) (*devstack.Cloud, error) {
		return devstack.StartS3(ctx, dir, "custos-disaster")
	}},
	{"gcs", func(ctx context.Context, dir string) (*devstack.Cloud, error) {
		return devstack.StartGCS(ctx, dir, "custos-disaster")
	}},
	{"azure", func(ctx context.Context, dir string) (*devstack.Cloud, error) {
		return devstack.StartAzure(ctx, dir, "custos-disaster")
	}},
}

// cloudConfig writes the config file: the broker at url, the key file, one fs target and the
// three emulators, every class replicated to all four.
func cloudConfig(t *testing.T, path, url string, clouds []*devstack.Cloud) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "nats:\n  url: %s\nkeys:\n  file: custos.key\n  create: true\ntargets:\n  - name: fs\n    kind: fs\n    path: targets/fs\n", url)
	names := []string{"fs"}
	for i, c := range clouds {
		fmt.Fprintf(&b, "  - name: %s\n%s", cloudStarts[i].name, c.Target)
		names = append(names, cloudStarts[i].name)
	}
	b.WriteString("classes:\n")
	for _, c := range []string{"critical", "important", "non_essential"} {
		fmt.Fprintf(&b, "  %s:\n    targets: [%s]\n", c, strings.Join(names, ", "))
	}
	b.WriteString("worker:\n  ack_wait: 5s\n  pack_max_delay: 50ms\n  spool_dir: spool\n  drain_timeout: 20s\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startBroker starts an embedded JetStream server storing under dir and connects to it.
func startBroker(t *testing.T, dir string) (*devstack.NATS, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	ns, err := devstack.StartNATS(dir, "127.0.0.1", -1)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		ns.Stop()
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		ns.Stop()
		t.Fatal(err)
	}
	return ns, nc, js
}

// TestBrokerLost is the acceptance check of issue 8: a workload replicated to local disk, S3,
// GCS and Azure (the emulators, as processes), with one customer erased, survives the loss of
// the whole JetStream store. On a fresh, empty broker `custos catalog rebuild --from s3`
// recreates the key store and the index, and `custos restore --all` then gives every record of
// every other customer byte for byte and reports the erased one as erased. With no broker at
// all, `custos restore --from-target` of each target gives the same.
func TestBrokerLost(t *testing.T) {
	bin := workerBinary(t)
	ctx := context.Background()
	dir := t.TempDir()
	begin := time.Now()
	phase := func(format string, args ...any) {
		t.Helper()
		t.Logf("%6.1fs "+format, append([]any{time.Since(begin).Seconds()}, args...)...)
	}

	// A missing emulator fails the test here; it never skips.
	var clouds []*devstack.Cloud
	for _, cs := range cloudStarts {
		c, err := cs.start(ctx, filepath.Join(dir, "clouds", cs.name))
		if err != nil {
			t.Fatalf("start the %s emulator: %v", cs.name, err)
		}
		t.Cleanup(c.Stop)
		for _, kv := range c.Env { // for the worker and the CLI, which inherit the environment
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		clouds = append(clouds, c)
		phase("%s emulator at %s", cs.name, c.Endpoint)
	}

	natsDir := filepath.Join(dir, "nats")
	ns, nc, js := startBroker(t, natsDir)
	brokerUp := true
	stopBroker := func() {
		if brokerUp {
			nc.Close()
			ns.Stop()
			brokerUp = false
		}
	}
	t.Cleanup(func() { stopBroker() })
	cfgPath := filepath.Join(dir, "custos.yaml")
	cloudConfig(t, cfgPath, ns.URL(), clouds)
	if err := os.MkdirAll(filepath.Join(dir, "spool"), 0o700); err != nil {
		t.Fatal(err)
	}
	stack := &harness.Stack{Dir: dir, NATS: ns, NC: nc, JS: js, Config: cfgPath}
	if err := worker.EnsureStreams(ctx, js); err != nil {
		t.Fatal(err)
	}
	parts, _, err := stack.Open(ctx) // creates the key file before the worker starts
	if err != nil {
		t.Fatal(err)
	}

	w, err := stack.StartWorker(bin, "worker-a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Kill)
	defer func() {
		if t.Failed() {
			t.Logf("worker log:\n%s", readLog(w.Log))
		}
	}()

	// The workload: eight customers, four records each, three versions of every record in
	// three rounds (so versions are spread over packs); then one customer is erased.
	started := time.Now()
	customers := []string{"cust-00", "cust-01", "cust-02", "cust-03", "cust-04", "cust-05", "cust-06", "cust-07"}
	const erased = "cust-03"
	wl := newWorkload()
	for range 3 {
		wl.publishRound(ctx, t, stack, customers)
	}
	wl.erase(ctx, t, stack, erased)
	noDeadLetters(ctx, t, js)
	erasedPseudo := parts.KMS.Pseudonym(tenant, erased)

	// Everything is durable in all four targets: the index says so and no replica is queued
	// for repair.
	before, err := parts.Index.Packs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) < 3 {
		t.Fatalf("%d packs for three rounds of events", len(before))
	}
	for _, pk := range before {
		if len(pk.Targets) != 4 {
			t.Fatalf("pack %s indexed in %v, want all four targets", pk.Pack, pk.Targets)
		}
	}
	if missing, err := parts.Repairs.List(ctx); err != nil || len(missing) != 0 {
		t.Fatalf("repair queue holds %d replicas (%v)", len(missing), err)
	}
	if err := w.Stop(30 * time.Second); err != nil {
		t.Fatalf("worker did not stop cleanly: %v", err)
	}
	live := slices.DeleteFunc(slices.Clone(customers), func(c string) bool { return c == erased })
	keysBefore := keyEntries(ctx, t, js, parts.KMS, customers)
	want := wl.only(live...)
	phase("workload: %d events, %d packs, durable in all four targets, in %v", wl.n+1, len(before), time.Since(started).Round(time.Millisecond))

	// Baseline: the intact broker restores the workload.
	out := filepath.Join(dir, "restore-before")
	r := custos(t, cfgPath, "restore", "--all", "--out", out).mustSucceed(t)
	r.wantCounts(t, "restored", map[string]int{"customers": len(live), "erased_skipped": 1, "failures": 0})
	checkOut(t, out, want, erased)
	phase("baseline restore through the intact broker: %s", strings.TrimSpace(r.stdout))

	// The disaster: the broker and its whole JetStream store are gone.
	parts.Close()
	stopBroker()
	if err := os.RemoveAll(natsDir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(natsDir); !os.IsNotExist(err) {
		t.Fatalf("JetStream store still there: %v", err)
	}

	// A fresh broker with an empty store, at a new address.
	ns, nc, js = startBroker(t, natsDir)
	brokerUp = true
	cloudConfig(t, cfgPath, ns.URL(), clouds)
	phase("JetStream store deleted; fresh broker at %s", ns.URL())
	for _, b := range []string{keys.DefaultBucket, catalog.DefaultBucket} {
		if _, err := js.KeyValue(ctx, b); err == nil {
			t.Fatalf("bucket %s exists on the fresh broker", b)
		}
	}

	rebuildStart := time.Now()
	r = custos(t, cfgPath, "catalog", "rebuild", "--from", "s3").mustSucceed(t)
	r.wantCounts(t, "rebuilt", map[string]int{"packs": len(before), "erased": 1, "failures": 0,
		"keys": len(live) + 1}) // every live customer's key and the catalog key, never an erased one
	if f := r.summary(t, "rebuilt")["from"]; !strings.HasSuffix(f, "s3") {
		t.Fatalf("rebuilt from %s, want the s3 target\n%s", f, r)
	}
	phase("rebuild from s3 took %v: %s", time.Since(rebuildStart).Round(time.Millisecond), strings.TrimSpace(r.stdout))

	// The index is back, every pack with its four holders, and the erased customer's key is
	// marked destroyed.
	stack = &harness.Stack{Dir: dir, NATS: ns, NC: nc, JS: js, Config: cfgPath}
	parts, _, err = stack.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after, err := parts.Index.Packs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("rebuilt index holds %d packs, want %d", len(after), len(before))
	}
	for i, pk := range after {
		b := before[i]
		if pk.Pack != b.Pack || pk.Size != b.Size || pk.SHA256 != b.SHA256 || pk.Items != b.Items || pk.Class != b.Class ||
			!slices.Equal(sorted(pk.Targets), sorted(b.Targets)) {
			t.Fatalf("rebuilt index entry %+v differs from the lost one %+v", pk, b)
		}
		// The rebuild does not know when a pack was committed; it must not make a backup look
		// newer than it is (an RPO breach would be hidden).
		if pk.Committed.After(b.Committed) {
			t.Fatalf("rebuilt index entry of pack %s says committed %v, after the lost one's %v", pk.Pack, pk.Committed, b.Committed)
		}
	}
	// Every live customer's key and the catalog key are back as they were (the same wrapped
	// DEK); the erased customer's is a destroyed marker, as before.
	keysAfter := keyEntries(ctx, t, js, parts.KMS, customers)
	for scope, b := range keysBefore {
		a := keysAfter[scope]
		if a.KMSKeyID != b.KMSKeyID || !bytes.Equal(a.Wrapped, b.Wrapped) || (a.Destroyed != "") != (b.Destroyed != "") {
			t.Fatalf("key entry %s after the rebuild: %+v, before the disaster: %+v", scope, a, b)
		}
	}
	if e := keysAfter[erasedPseudo]; e.Destroyed == "" || e.Wrapped != nil {
		t.Fatalf("erased customer's key entry after the rebuild is %+v, want a destroyed marker", e)
	}

	// Restore through the rebuilt broker.
	out = filepath.Join(dir, "restore-rebuilt")
	r = custos(t, cfgPath, "restore", "--all", "--out", out).mustSucceed(t)
	r.wantCounts(t, "restored", map[string]int{"customers": len(live), "erased_skipped": 1,
		"keys_recovered": 0, "skipped_replicas": 0, "failures": 0})
	checkOut(t, out, want, erased)
	phase("restore through the rebuilt broker: %s", strings.TrimSpace(r.stdout))

	// The erased customer's destroyed marker purged as well: its wrapped key is still inside
	// the manifests, but the erasure records keep it erased; it is never recovered.
	kv, err := js.KeyValue(ctx, keys.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, erasedPseudo); err != nil {
		t.Fatal(err)
	}
	out = filepath.Join(dir, "restore-marker-purged")
	r = custos(t, cfgPath, "restore", "--all", "--out", out).mustSucceed(t)
	r.wantCounts(t, "restored", map[string]int{"customers": len(live), "erased_skipped": 1,
		"keys_recovered": 0, "failures": 0})
	checkOut(t, out, want, erased)
	out = filepath.Join(dir, "restore-marker-purged-customer")
	r = custos(t, cfgPath, "restore", "--tenant", tenant, "--customer", erased, "--out", out).mustSucceed(t)
	r.wantCounts(t, "restored", map[string]int{"customers": 0, "records": 0, "erased_skipped": 1,
		"keys_recovered": 0, "failures": 0})
	checkOut(t, out, nil, erased)

	// A second rebuild over the rebuilt store changes nothing but the purged marker, which it
	// writes again.
	r = custos(t, cfgPath, "catalog", "rebuild", "--from", "s3").mustSucceed(t)
	r.wantCounts(t, "rebuilt", map[string]int{"packs": len(before), "erased": 1, "failures": 0, "keys": len(live) + 1})
	again := keyEntries(ctx, t, js, parts.KMS, customers)
	for scope, a := range keysAfter {
		if b := again[scope]; b.KMSKeyID != a.KMSKeyID || !bytes.Equal(b.Wrapped, a.Wrapped) || (b.Destroyed != "") != (a.Destroyed != "") {
			t.Fatalf("key entry %s after a second rebuild: %+v, after the first: %+v", scope, b, a)
		}
	}
	if n, err := parts.Index.Packs(ctx); err != nil || len(n) != len(before) {
		t.Fatalf("index after a second rebuild: %d packs (%v), want %d", len(n), err, len(before))
	}
	phase("second rebuild: %s", strings.TrimSpace(r.stdout))

	// Bit rot in every pack the S3 emulator holds (one byte flipped in its backing files):
	// verify --read-data finds each flip, repairs it from a replica that verifies, and a second
	// run is clean.
	s3packs := filepath.Join(dir, "clouds", "s3", "data", "custos-disaster", "packs")
	flipped := 0
	err = filepath.WalkDir(s3packs, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			return err
		}
		b[len(b)/2] ^= 0x01
		flipped++
		return os.WriteFile(p, b, 0o600)
	})
	if err != nil || flipped != len(before) {
		t.Fatalf("flipped a byte in %d S3 pack files (%v), want %d", flipped, err, len(before))
	}
	// And the erasure record is deleted behind Custos's back: a rebuild from S3 alone would no
	// longer know the erasure, so verify copies it back from another target.
	erasureFile := filepath.Join(dir, "clouds", "s3", "data", "custos-disaster", filepath.FromSlash(repository.ErasureName(erasedPseudo)))
	if err := os.Remove(erasureFile); err != nil {
		t.Fatal(err)
	}
	r = custos(t, cfgPath, "verify", "--read-data").mustSucceed(t)
	r.wantCounts(t, "verified", map[string]int{"packs": len(before), "problems": flipped, "repaired": flipped, "unrecoverable": 0})
	if rep := r.stderrLines("REPAIRED s3:s3 packs/"); len(rep) != flipped {
		t.Fatalf("verify named %d repaired S3 packs, want %d:\n%s", len(rep), flipped, r)
	}
	r.wantCounts(t, "records", map[string]int{"erasures": 1, "problems": 1, "repaired": 1})
	if rep := r.stderrLines("REPAIRED s3:s3 " + repository.ErasureName(erasedPseudo)); len(rep) != 1 {
		t.Fatalf("verify did not name the repaired erasure record:\n%s", r)
	}
	if _, err := os.Stat(erasureFile); err != nil {
		t.Fatalf("erasure record not back in the S3 emulator: %v", err)
	}
	r = custos(t, cfgPath, "verify", "--read-data").mustSucceed(t)
	r.wantCounts(t, "verified", map[string]int{"packs": len(before), "problems": 0, "repaired": 0, "unrecoverable": 0})
	r.wantCounts(t, "records", map[string]int{"erasures": 1, "problems": 0})
	phase("verify repaired %d rotten S3 packs; second run clean", flipped)

	// No broker at all: the config still names the broker's address, where nothing listens.
	parts.Close()
	stopBroker()
	for _, from := range []string{"s3", "fs", "gcs", "azure"} {
		t.Run("from-target-"+from, func(t *testing.T) {
			out := filepath.Join(dir, "restore-offline-"+from)
			start := time.Now()
			r := custos(t, cfgPath, "restore", "--from-target", from, "--all", "--out", out).mustSucceed(t)
			r.wantCounts(t, "restored", map[string]int{"customers": len(live), "erased_skipped": 1,
				"keys_recovered": 0, "skipped_replicas": 0, "failures": 0})
			if f := r.stderrLines("FAILED:"); len(f) > 0 {
				t.Fatalf("failures named on stderr:\n%s", r)
			}
			checkOut(t, out, want, erased)
			phase("restore --from-target %s with no broker took %v: %s", from, time.Since(start).Round(time.Millisecond), strings.TrimSpace(r.stdout))
		})
	}
	// One customer at a time, with no broker: a live one, and the erased one.
	t.Run("from-target-s3-customer", func(t *testing.T) {
		out := filepath.Join(dir, "restore-offline-customer")
		r := custos(t, cfgPath, "restore", "--from-target", "s3", "--tenant", tenant, "--customer", live[0], "--out", out).mustSucceed(t)
		r.wantCounts(t, "restored", map[string]int{"customers": 1, "records": len(recordKeys), "erased_skipped": 0, "failures": 0})
		checkOut(t, out, wl.only(live[0]))
		out = filepath.Join(dir, "restore-offline-erased")
		r = custos(t, cfgPath, "restore", "--from-target", "s3", "--tenant", tenant, "--customer", erased, "--out", out).mustSucceed(t)
		r.wantCounts(t, "restored", map[string]int{"customers": 0, "records": 0, "erased_skipped": 1, "failures": 0})
		checkOut(t, out, nil, erased)
	})
}

// keyEntry is a key store entry as stored (docs/design.md section 3).
type keyEntry struct {
	KMSKeyID  string `json:"kms_key_id"`
	Wrapped   []byte `json:"wrapped"`
	Destroyed string `json:"destroyed"`
}

// keyEntries reads the key store entries of the catalog and of the customers' pseudonyms.
func keyEntries(ctx context.Context, t *testing.T, js jetstream.JetStream, ps keys.Pseudonymizer, customers []string) map[string]keyEntry {
	t.Helper()
	kv, err := js.KeyValue(ctx, keys.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	scopes := []string{pack.CatalogScope}
	for _, c := range customers {
		scopes = append(scopes, ps.Pseudonym(tenant, c))
	}
	out := map[string]keyEntry{}
	for _, s := range scopes {
		e, err := kv.Get(ctx, s)
		if err != nil {
			t.Fatalf("key store entry %s: %v", s, err)
		}
		var k keyEntry
		if err := json.Unmarshal(e.Value(), &k); err != nil {
			t.Fatalf("key store entry %s: %v", s, err)
		}
		out[s] = k
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
