// Package crash kills real worker processes in the middle of their work and checks that no
// event is lost, nothing partial appears under a final name, and the work done again produces
// the same object names.
package crash

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/worker"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
	"github.com/custos-dev/custos/tests/harness"
)

func TestWorkerKilledMidPackWrite(t *testing.T) {
	bin, err := harness.WorkerBinary()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stack, err := harness.Start(t.TempDir(), harness.Options{AckWait: 2 * time.Second, PackMaxDelay: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer stack.Close()
	if err := worker.EnsureStreams(ctx, stack.JS); err != nil {
		t.Fatal(err)
	}
	a, err := stack.StartWorker(bin, "worker-a")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Kill()

	// A large, incompressible item keeps the worker writing long enough to be caught mid-write;
	// small events around it fill ordinary packs.
	obs, err := stack.JS.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "uploads"})
	if err != nil {
		t.Fatal(err)
	}
	large := make([]byte, 96<<20)
	rand.Read(large)
	if _, err := obs.PutBytes(ctx, "large", large); err != nil {
		t.Fatal(err)
	}
	p, err := producer.New(stack.JS, "urn:test:crash")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	publishSmall := func(from, to int) {
		for i := from; i < to; i++ {
			c := fmt.Sprintf("cust-%d", i%25)
			key := fmt.Sprintf("rec-%d", i%4)
			data := []byte(fmt.Sprintf(`{"event":%d,"customer":%q}`, i, c))
			if _, err := p.PublishPostTransactionAsync(ctx, postTx(fmt.Sprintf("small-%d", i), c, key, data)); err != nil {
				t.Fatal(err)
			}
			want[c+"/"+key] = data
		}
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	publishSmall(0, 400)
	ref := postTx("large-1", "cust-big", "export", nil)
	ref.Record.Source = &custosv1.Record_Ref{Ref: &custosv1.RecordRef{Uri: "nats-object://uploads/large", Size: int64(len(large))}}
	if _, err := p.PublishPostTransaction(ctx, ref); err != nil {
		t.Fatal(err)
	}
	want["cust-big/export"] = large
	publishSmall(400, 800)

	// Kill the worker as soon as a target holds a temporary file: a pack is being written.
	deadline := time.Now().Add(60 * time.Second)
	for !writing(stack.Targets) {
		if time.Now().After(deadline) {
			t.Fatal("never saw a pack being written")
		}
		time.Sleep(time.Millisecond)
	}
	a.Kill()
	visible := finalObjects(t, stack.Targets)

	t.Logf("worker-a log:\n%s", logs(a.Log))
	b, err := stack.StartWorker(bin, "worker-b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Kill()
	if err := stack.WaitSettled(ctx, 2*time.Minute); err != nil {
		t.Fatal(err, logs(b.Log))
	}
	if err := b.Stop(30 * time.Second); err != nil {
		t.Log(logs(b.Log))
		t.Fatal(err)
	}

	// What was visible under a final name when the worker died is unchanged and complete: the
	// same bytes are part of the committed catalog now.
	after := finalObjects(t, stack.Targets)
	for name, sum := range visible {
		if after[name] != sum {
			t.Fatalf("%s changed or vanished after the crash", name)
		}
	}
	parts, _, err := stack.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer parts.Close()
	packs, err := parts.Index.Packs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	committed := map[string]bool{}
	items := 0
	for _, pk := range packs {
		committed[pk.Pack] = true
		items += pk.Items
	}
	for name := range after {
		id := filepath.Base(name)
		if !committed[id] {
			t.Fatalf("%s is stored but not in the catalog", name)
		}
	}
	// Every pack intent ever published was completed under its own name: redelivered work
	// rebuilt the same packs instead of making new ones.
	for _, id := range intents(t, stack.JS) {
		if !committed[id] {
			t.Fatalf("pack intent %s was never completed", id)
		}
	}
	if items != 801 {
		t.Fatalf("catalog holds %d items for 801 events", items)
	}
	readers := target.Readers(parts.Targets)
	out := t.TempDir()
	r := &restore.Restorer{Index: parts.Index, Targets: readers, Keys: parts.Keys, Pseudonyms: parts.KMS}
	rep, err := r.All(ctx, restore.Options{Out: out})
	if err != nil || !rep.OK() {
		t.Fatalf("restore: %v %+v", err, rep)
	}
	for k, data := range want {
		c, key, _ := strings.Cut(k, "/")
		got, err := os.ReadFile(restore.Path(out, "t1", c, key))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("record %s lost or wrong after the crash (%v)", k, err)
		}
	}
}

func postTx(id, customer, key string, data []byte) *custosv1.PostTransaction {
	return &custosv1.PostTransaction{
		Meta:   &custosv1.Meta{EventId: id, Time: timestamppb.Now(), Tenant: "t1", CustomerId: customer, DataClass: "critical"},
		Record: &custosv1.Record{Key: key, Source: &custosv1.Record_Inline{Inline: data}},
	}
}

// writing reports whether any target holds a temporary file.
func writing(roots []string) bool {
	for _, r := range roots {
		if es, err := os.ReadDir(filepath.Join(r, ".tmp")); err == nil && len(es) > 0 {
			return true
		}
	}
	return false
}

// finalObjects maps every object under a final name (target/name) to its SHA-256.
func finalObjects(t *testing.T, roots []string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	for _, r := range roots {
		for _, prefix := range []string{"packs", "manifests"} {
			err := filepath.WalkDir(filepath.Join(r, prefix), func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					if os.IsNotExist(err) {
						return nil
					}
					return err
				}
				if d.IsDir() {
					return nil
				}
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				rel, _ := filepath.Rel(filepath.Dir(r), p)
				out[rel] = sha256.Sum256(b)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}

// intents lists the pack ids of every intent published.
func intents(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, worker.IntentStream)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	st := s.CachedInfo().State
	for seq := st.FirstSeq; seq <= st.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil || strings.HasSuffix(m.Subject, ".done") {
			continue
		}
		var in struct{ Pack string }
		if err := json.Unmarshal(m.Data, &in); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, in.Pack)
	}
	if len(ids) == 0 {
		t.Fatal("no intents published")
	}
	return ids
}

func logs(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
