// Package disaster loses the broker's state (the whole JetStream store, or single entries of the
// key store and the index) and checks that the targets and the key file alone bring every backup
// back: custos catalog rebuild, custos restore, and custos restore --from-target with no broker.
package disaster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/restore"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
	"github.com/custos-dev/custos/tests/harness"
)

const tenant = "acme"

// TestMain builds the worker and the CLI from this checkout, at the same time, before any test
// starts its clock.
func TestMain(m *testing.M) {
	done := make(chan error, 1)
	go func() {
		_, err := harness.WorkerBinary()
		done <- err
	}()
	_, cliErr = harness.CLIBinary()
	if err := <-done; err != nil && cliErr == nil {
		cliErr = err
	}
	os.Exit(m.Run())
}

var cliErr error // of either build: every test needs both binaries

// cliBinary returns the CLI built by TestMain.
func cliBinary(t *testing.T) string {
	t.Helper()
	path, err := harness.CLIBinary()
	if err == nil {
		err = cliErr
	}
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// workerBinary returns the worker built by TestMain.
func workerBinary(t *testing.T) string {
	t.Helper()
	bin, err := harness.WorkerBinary()
	if err == nil {
		err = cliErr
	}
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// result is one run of the CLI.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("custos %s\nexit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// summary returns the fields of the stdout line starting with prefix ("restored", "rebuilt") as
// name=value pairs; it fails the test if there is no such line.
func (r result) summary(t *testing.T, prefix string) map[string]string {
	t.Helper()
	for _, line := range strings.Split(r.stdout, "\n") {
		rest, ok := strings.CutPrefix(line, prefix+" ")
		if !ok {
			continue
		}
		out := map[string]string{}
		for _, f := range strings.Fields(rest) {
			k, v, _ := strings.Cut(f, "=")
			out[k] = v
		}
		return out
	}
	t.Fatalf("no %q line on stdout:\n%s", prefix, r)
	return nil
}

// wantCounts fails the test unless the summary line's counters have the given values.
func (r result) wantCounts(t *testing.T, prefix string, want map[string]int) {
	t.Helper()
	got := r.summary(t, prefix)
	for _, k := range slices.Sorted(maps.Keys(want)) {
		n, err := strconv.Atoi(got[k])
		if err != nil || n != want[k] {
			t.Fatalf("%s=%s, want %d\n%s", k, got[k], want[k], r)
		}
	}
}

// stderrLines returns the stderr lines starting with prefix ("FAILED:", "WARNING:", ...).
func (r result) stderrLines(prefix string) []string {
	var out []string
	for _, line := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return out
}

// custos runs the CLI with the config file and args, with a deadline.
func custos(t *testing.T, config string, args ...string) result {
	t.Helper()
	args = append(args, "--config", config)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cliBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		t.Fatalf("run custos %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("custos %s did not finish within 3 minutes\n%s", strings.Join(args, " "), r)
	}
	return r
}

// mustSucceed fails the test unless the run exited 0.
func (r result) mustSucceed(t *testing.T) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("command failed:\n%s", r)
	}
	return r
}

// workload is what the test published: the newest bytes of each customer's records.
type workload struct {
	latest map[string]map[string][]byte // customer -> record key -> bytes
	rng    *rand.Rand
	n      int
}

func newWorkload() *workload {
	return &workload{latest: map[string]map[string][]byte{}, rng: rand.New(rand.NewPCG(8, 11))}
}

// recordKeys are the keys every customer writes: a slash and a dot-name check the escaping.
var recordKeys = []string{"profile", "orders/2026/1", "orders/2026/2", "notes.txt"}

// publishRound writes a new version of every record of every customer and waits until every
// event is durable. Record bytes are binary, of sizes from a few bytes to several segments.
func (w *workload) publishRound(ctx context.Context, t *testing.T, s *harness.Stack, customers []string) {
	t.Helper()
	p, err := producer.New(s.JS, "urn:test:disaster")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range customers {
		for _, key := range recordKeys {
			w.n++
			size := 1 + w.rng.IntN(4<<10)
			if w.n%9 == 0 {
				size = 150<<10 + w.rng.IntN(50<<10) // more than two 64 KiB segments
			}
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(w.rng.Uint32())
			}
			w.put(ctx, t, p, fmt.Sprintf("ev-%d", w.n), c, key, data)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitSettled(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// put publishes one record version (asynchronously: Flush waits for it).
func (w *workload) put(ctx context.Context, t *testing.T, p *producer.Producer, id, customer, key string, data []byte) {
	t.Helper()
	ev := &custosv1.PostTransaction{
		Meta: &custosv1.Meta{EventId: id, Time: timestamppb.Now(), Tenant: tenant, CustomerId: customer, DataClass: "critical"},
		Record: &custosv1.Record{Key: key, ContentType: "application/octet-stream",
			Source: &custosv1.Record_Inline{Inline: data}},
	}
	if _, err := p.PublishPostTransactionAsync(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if w.latest[customer] == nil {
		w.latest[customer] = map[string][]byte{}
	}
	w.latest[customer][key] = data
}

// erase publishes a deletion request for customer, waits until it is acknowledged and drops
// the customer from the expected state.
func (w *workload) erase(ctx context.Context, t *testing.T, s *harness.Stack, customer string) {
	t.Helper()
	p, err := producer.New(s.JS, "urn:test:disaster")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PublishDeletionRequest(ctx, &custosv1.DeletionRequest{
		Meta:        &custosv1.Meta{EventId: "erase-" + customer, Time: timestamppb.Now(), Tenant: tenant, CustomerId: customer},
		RequestedBy: "disaster-test", LegalBasis: "GDPR Art. 17",
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitSettled(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	delete(w.latest, customer)
}

// only returns the expected state of the given customers.
func (w *workload) only(customers ...string) map[string]map[string][]byte {
	out := map[string]map[string][]byte{}
	for _, c := range customers {
		out[c] = w.latest[c]
	}
	return out
}

// checkOut fails the test unless out holds exactly the expected records, byte for byte, and
// nothing of the customers in absent.
func checkOut(t *testing.T, out string, want map[string]map[string][]byte, absent ...string) {
	t.Helper()
	wantFiles := map[string][]byte{}
	for c, recs := range want {
		for key, data := range recs {
			wantFiles[restore.Path(out, tenant, c, key)] = data
		}
	}
	seen := 0
	err := filepath.WalkDir(out, func(path string, d fs.DirEntry, err error) error {
		if path == out && errors.Is(err, fs.ErrNotExist) {
			return fs.SkipAll // nothing restored at all
		}
		if err != nil || d.IsDir() {
			return err
		}
		data, ok := wantFiles[path]
		if !ok {
			return fmt.Errorf("unexpected file %s in the restore", path)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, data) {
			return fmt.Errorf("%s: %d bytes restored differ from the %d published last", path, len(got), len(data))
		}
		seen++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(wantFiles) {
		var missing []string
		for p := range wantFiles {
			if _, err := os.Stat(p); err != nil {
				missing = append(missing, p)
			}
		}
		slices.Sort(missing)
		t.Fatalf("%d of %d records restored; missing: %v", seen, len(wantFiles), missing)
	}
	for _, c := range absent {
		dir := filepath.Dir(restore.Path(out, tenant, c, "x"))
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("customer %s appears in the restore (%s: %v)", c, dir, err)
		}
	}
}

// noDeadLetters fails the test if any event was dead-lettered (a settled stream counts them
// as done).
func noDeadLetters(ctx context.Context, t *testing.T, js jetstream.JetStream) {
	t.Helper()
	s, err := js.Stream(ctx, event.DLQStreamName)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 0 {
		t.Fatalf("%d events dead-lettered", n)
	}
}

func readLog(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 20000 {
		b = b[len(b)-20000:]
	}
	return string(b)
}
