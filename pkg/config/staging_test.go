package config_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/internal/emulator"
	"github.com/custos-dev/custos/pkg/internal/logtest"
	"github.com/custos-dev/custos/pkg/target"
)

// stage writes a staging file as a writer killed in the middle of a Put leaves it, last
// modified age ago.
func stage(t *testing.T, tmp, name string, age time.Duration) string {
	t.Helper()
	p := filepath.Join(tmp, name)
	if err := os.WriteFile(p, []byte("half a pack"), 0o600); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-age)
	if err := os.Chtimes(p, at, at); err != nil {
		t.Fatal(err)
	}
	return p
}

// stallReader yields its first half, then blocks until released: a live Put in the middle.
type stallReader struct {
	*bytes.Reader
	half    int64
	stalled chan struct{}
	release chan struct{}
	once    sync.Once
}

func (r *stallReader) Read(p []byte) (int, error) {
	if off := r.Size() - int64(r.Len()); off >= r.half {
		r.once.Do(func() { close(r.stalled) })
		<-r.release
	} else if rest := r.half - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	return r.Reader.Read(p)
}

// The cleanup reaches the fs provider through the stack wrappers, removes staging files older
// than MaxAge and keeps fresh ones, including the file of a Put in progress, which then
// completes; it skips targets without staging files; it logs a count only when it removed
// something.
func TestStagingCleanup(t *testing.T) {
	t.Parallel()
	c, dir := load(t, fmt.Sprintf(`
nats: {url: u}
keys: {file: k}
targets:
  - {name: local, kind: fs, path: data/local}
  - {name: cloud, kind: gcs, endpoint: %q, bucket: b}
classes: {c: {targets: [local, cloud]}}
`, gcsEndpoint(emulator.FreePort(t))))
	ctx := t.Context()
	ts, err := c.OpenTargets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	closeAll(t, ts)
	tmp := filepath.Join(dir, "data", "local", ".tmp")
	dead := stage(t, tmp, "put-dead", 2*time.Hour)
	recent := stage(t, tmp, "put-recent", 10*time.Minute)

	data := bytes.Repeat([]byte("live pack "), 10_000)
	r := &stallReader{Reader: bytes.NewReader(data), half: int64(len(data) / 2), stalled: make(chan struct{}), release: make(chan struct{})}
	putErr := make(chan error, 1)
	go func() {
		putErr <- ts[0].Put(ctx, "packs/live", r, int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)})
	}()
	<-r.stalled

	var logs logtest.Buffer
	cleanup := config.StagingCleanup{Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	if err := cleanup.Run(ctx, ts); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("staging file of a dead writer still there: %v", err)
	}
	entries, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, e := range entries {
		kept = append(kept, e.Name())
	}
	if len(kept) != 2 || !strings.Contains(strings.Join(kept, " "), filepath.Base(recent)) {
		t.Fatalf("staging files kept %v, want put-recent and the live Put's", kept)
	}
	if out := logs.String(); strings.Count(out, "level=INFO") != 1 || !strings.Contains(out, "target=fs:local files=1") {
		t.Fatalf("want one INFO line counting one file on fs:local:\n%s", out)
	}

	close(r.release)
	if err := <-putErr; err != nil {
		t.Fatalf("Put whose staging file was kept: %v", err)
	}
	if got, err := getObject(ctx, ts[0], "packs/live"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get = %d bytes, %v", len(got), err)
	}

	// Nothing to remove: nothing logged.
	if err := cleanup.Run(ctx, ts); err != nil {
		t.Fatal(err)
	}
	if out := logs.String(); strings.Count(out, "level=INFO") != 1 {
		t.Fatalf("a pass that removed nothing logged:\n%s", out)
	}

	// The loop runs a pass at Start, with MaxAge as configured.
	dead = stage(t, tmp, "put-dead-2", 20*time.Minute)
	loop := config.StagingCleanup{MaxAge: 15 * time.Minute, Logger: slog.New(slog.NewTextHandler(&logs, nil))}.Loop(ts)
	if err := loop.Start(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(dead); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the loop did not clean at Start")
		}
		time.Sleep(time.Millisecond)
	}
	if err := loop.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(recent); err != nil {
		t.Fatalf("a file younger than MaxAge was removed: %v", err)
	}
}
