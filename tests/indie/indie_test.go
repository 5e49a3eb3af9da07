// Package indie checks that docs/design.md is a complete specification of what Custos writes:
// a restorer written from the document alone (tests/cmd/indierestore, which imports no Custos
// package) restores, from one fs target and the key file, exactly the tree `custos restore --all`
// writes, and leaves the erased customer out as Custos does.
package indie

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/worker"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
	"github.com/custos-dev/custos/tests/harness"
)

// build compiles a main package with the go tool: pkg is relative to dir.
func build(t *testing.T, dir, pkg, name string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// run runs a command in dir and returns its stdout; it fails the test on a non-zero exit.
func run(t *testing.T, dir, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), args, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// tree maps every path under root (relative, slash-separated) to its content; directories map
// to "<dir>".
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			out[rel] = "<dir>"
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = string(b)
		default:
			out[rel] = "<" + d.Type().String() + ">"
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, nameA string, a map[string]string, nameB string, b map[string]string) {
	t.Helper()
	for p, va := range a {
		vb, ok := b[p]
		switch {
		case !ok:
			t.Errorf("%s holds %s, %s does not", nameA, p, nameB)
		case va != vb:
			t.Errorf("%s differs: %d bytes in %s, %d bytes in %s", p, len(va), nameA, len(vb), nameB)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			t.Errorf("%s holds %s, %s does not", nameB, p, nameA)
		}
	}
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

var counts = regexp.MustCompile(`customers=(\d+) records=(\d+)`)

func parseCounts(t *testing.T, line string) (int, int) {
	t.Helper()
	m := counts.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no counts in %q", line)
	}
	c, _ := strconv.Atoi(m[1])
	r, _ := strconv.Atoi(m[2])
	return c, r
}

func TestIndependentRestore(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	workerBin, err := harness.WorkerBinary()
	if err != nil {
		t.Fatal(err)
	}
	cli := build(t, root, "./services/cli", "custos")
	indie := build(t, filepath.Join(root, "tests"), "./cmd/indierestore", "indierestore")
	// The restorer is independent: the standard library and zstd, no Custos package.
	deps := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./cmd/indierestore")
	deps.Dir = filepath.Join(root, "tests")
	b, err := deps.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(b)) {
		if dep != "github.com/custos-dev/custos/tests/cmd/indierestore" && !strings.HasPrefix(dep+"/", "github.com/klauspost/compress/") {
			t.Fatalf("indierestore imports %s: it must use only the standard library and zstd", dep)
		}
	}

	ctx := context.Background()
	dir := t.TempDir()
	stack, err := harness.Start(dir, harness.Options{Targets: 1, PackMaxDelay: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer stack.Close()
	if err := worker.EnsureStreams(ctx, stack.JS); err != nil {
		t.Fatal(err)
	}
	w, err := stack.StartWorker(workerBin, "worker-a")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Kill()
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(w.Log)
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("worker log:\n%s", b)
		}
	}()
	p, err := producer.New(stack.JS, "urn:test:indie")
	if err != nil {
		t.Fatal(err)
	}

	// want is what a restore must give: tenant, customer, record key → bytes.
	type rec struct{ tenant, customer, key string }
	want := map[rec][]byte{}
	// Whole seconds, so that an event time with a fraction sorts before it as text ("…05.5Z" <
	// "…05Z") but after it in time: a restorer that compares times as strings gets it wrong.
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	n := 0
	meta := func(tenant, customer string, at time.Time) *custosv1.Meta {
		n++
		return &custosv1.Meta{EventId: fmt.Sprintf("ev-%d", n), Time: timestamppb.New(at), Tenant: tenant,
			CustomerId: customer, DataClass: "critical"}
	}
	inline := func(key string, data []byte) *custosv1.Record {
		return &custosv1.Record{Key: key, ContentType: "application/octet-stream", Source: &custosv1.Record_Inline{Inline: data}}
	}
	post := func(tenant, customer, key string, at time.Time, data []byte, final bool) {
		t.Helper()
		ev := &custosv1.PostTransaction{Meta: meta(tenant, customer, at), Record: inline(key, data)}
		if _, err := p.PublishPostTransaction(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if final {
			want[rec{tenant, customer, key}] = data
		}
	}

	// alice: one record updated twice, a key with a slash, a space and a percent sign.
	post("shop", "alice", "profile", base.Add(1*time.Second), []byte(`{"v":1}`), false)
	post("shop", "alice", "profile", base.Add(2*time.Second), []byte(`{"v":2}`), false)
	post("shop", "alice", "profile", base.Add(3*time.Second), []byte(`{"v":3}`), true)
	post("shop", "alice", "orders/2026 100%", base.Add(3*time.Second), []byte("order"), true)
	// bob: a record larger than one 64 KiB segment even after compression (incompressible), and
	// a record whose newer version (by event time, with a fraction) was published first.
	post("shop", "bob", "photo", base.Add(4*time.Second), random(200<<10), true)
	// A compressible record over 1 KiB: the producer sends it compressed (inline_zstd), so its
	// item's zstd data is two frames (design.md section 4, step 2).
	post("shop", "bob", "history", base.Add(4*time.Second), []byte(strings.Repeat(`{"order":1,"total":"9.99"},`, 400)), true)
	newer := []byte("newer, published first")
	post("shop", "bob", "late", base.Add(5*time.Second+500*time.Millisecond), newer, true)
	post("shop", "bob", "late", base.Add(5*time.Second), []byte("older, published second"), false)
	// carol: two versions with the same event time (the later stream sequence wins), dot-names
	// and an empty-looking customer id escape into single path elements.
	post("acme", "..", "same-time", base.Add(6*time.Second), []byte("first"), false)
	post("acme", "..", "same-time", base.Add(6*time.Second), []byte("second"), true)
	post("acme", "..", ".", base.Add(6*time.Second), []byte("dot"), true)
	post("acme", "ca rol/é", "ключ", base.Add(6*time.Second), []byte("unicode"), true)
	// erin: several records in one event (record index 0, 1, 2).
	manual := &custosv1.ManualRequest{Meta: meta("shop", "erin", base.Add(7*time.Second)), Reason: "test", RequestedBy: "indie",
		Records: []*custosv1.Record{inline("a", []byte("a0")), inline("b", []byte("b1")), inline("c", random(70<<10))}}
	if _, err := p.Publish(ctx, manual); err != nil {
		t.Fatal(err)
	}
	for _, r := range manual.Records {
		want[rec{"shop", "erin", r.Key}] = r.GetInline()
	}
	// frank: a large record by reference, streamed (random nonce, many segments).
	obs, err := stack.JS.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "uploads"})
	if err != nil {
		t.Fatal(err)
	}
	large := random(3<<20 + 12345)
	if _, err := obs.PutBytes(ctx, "large", large); err != nil {
		t.Fatal(err)
	}
	ref := &custosv1.PostTransaction{Meta: meta("shop", "frank", base.Add(8*time.Second)), Record: &custosv1.Record{Key: "export",
		Source: &custosv1.Record_Ref{Ref: &custosv1.RecordRef{Uri: "nats-object://uploads/large", Size: int64(len(large))}}}}
	if _, err := p.PublishPostTransaction(ctx, ref); err != nil {
		t.Fatal(err)
	}
	want[rec{"shop", "frank", "export"}] = large
	// dave: backed up, then erased.
	post("shop", "dave", "profile", base.Add(9*time.Second), []byte("dave v1"), false)
	post("shop", "dave", "profile", base.Add(10*time.Second), []byte("dave v2"), false)
	post("shop", "dave", "notes", base.Add(10*time.Second), random(100<<10), false)
	if err := stack.WaitSettled(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	del := &custosv1.DeletionRequest{Meta: &custosv1.Meta{EventId: "erase-dave", Time: timestamppb.Now(), Tenant: "shop",
		CustomerId: "dave"}, RequestedBy: "indie-test", LegalBasis: "gdpr_art17"}
	if _, err := p.PublishDeletionRequest(ctx, del); err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitSettled(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	erasures, _ := filepath.Glob(filepath.Join(stack.Targets[0], "erasures", "*", "p*"))
	if len(erasures) != 1 {
		t.Fatalf("target holds %d erasure records, want 1", len(erasures))
	}

	// The same target, three readers: Custos with the broker, Custos from the target alone, and
	// the restorer written from the document.
	outs := map[string]string{}
	for _, name := range []string{"custos", "custos-from-target", "indie"} {
		outs[name] = filepath.Join(dir, "out-"+name)
	}
	lines := map[string]string{
		"custos": run(t, dir, cli, "--config", stack.Config, "restore", "--all", "--out", outs["custos"]),
		"custos-from-target": run(t, dir, cli, "--config", stack.Config, "restore", "--all", "--from-target", "t0",
			"--out", outs["custos-from-target"]),
		"indie": run(t, dir, indie, "-key", filepath.Join(dir, "custos.key"), "-dir", stack.Targets[0], "-out", outs["indie"]),
	}
	for name, line := range lines {
		t.Logf("%s: %s", name, bytes.TrimSpace([]byte(line)))
	}

	ref0 := tree(t, outs["custos"])
	for _, name := range []string{"custos-from-target", "indie"} {
		sameTree(t, "custos", ref0, name, tree(t, outs[name]))
	}
	// And the tree is what was backed up: the newest version of every record, dave absent.
	files := 0
	for _, v := range ref0 {
		if v != "<dir>" {
			files++
		}
	}
	if files != len(want) {
		t.Errorf("restore wrote %d records, want %d", files, len(want))
	}
	for r, data := range want {
		got, err := os.ReadFile(restore.Path(outs["indie"], r.tenant, r.customer, r.key))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("record %q/%q/%q: %d bytes, want %d (%v)", r.tenant, r.customer, r.key, len(got), len(data), err)
		}
	}
	for name, out := range outs {
		if _, err := os.Stat(filepath.Join(out, "shop", "dave")); !os.IsNotExist(err) {
			t.Errorf("%s restored the erased customer (%v)", name, err)
		}
	}

	// The summaries agree.
	customers := map[string]bool{}
	for r := range want {
		customers[r.tenant+"/"+r.customer] = true
	}
	for name, line := range lines {
		c, r := parseCounts(t, line)
		if c != len(customers) || r != len(want) {
			t.Errorf("%s: customers=%d records=%d, want %d and %d", name, c, r, len(customers), len(want))
		}
	}
	if !regexp.MustCompile(`erased_skipped=1\b`).MatchString(lines["custos"]) {
		t.Errorf("custos did not report one erased customer: %s", lines["custos"])
	}
	if !regexp.MustCompile(`erased=1\b`).MatchString(lines["indie"]) {
		t.Errorf("indierestore did not report one erased customer: %s", lines["indie"])
	}

	// After two KEK rotations and the destruction of the retired KEKs, every manifest in the
	// target carries keys wrapped by a KEK that no longer exists: the restorer written from the
	// document follows the key envelopes (section 11, KEK epochs) and restores the same tree.
	for range 2 {
		run(t, dir, cli, "--config", stack.Config, "keys", "rotate")
	}
	run(t, dir, cli, "--config", stack.Config, "keys", "destroy-retired")
	rotated := filepath.Join(dir, "out-indie-rotated")
	line := run(t, dir, indie, "-key", filepath.Join(dir, "custos.key"), "-dir", stack.Targets[0], "-out", rotated)
	t.Logf("indie after rotations: %s", bytes.TrimSpace([]byte(line)))
	sameTree(t, "custos", ref0, "indie-rotated", tree(t, rotated))
}
