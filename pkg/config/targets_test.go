package config_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/internal/emulator"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/lazy"
)

// blockedMount returns a path that cannot be created because a regular file sits where a
// mount point's directory should be, and the function that removes the file (the mount
// returns).
func blockedMount(t *testing.T) (path string, mount func()) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "mnt")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(file, "custos"), func() {
		if err := os.Remove(file); err != nil {
			t.Fatal(err)
		}
	}
}

// gcsEndpoint is the JSON API endpoint fake-gcs-server serves on port.
func gcsEndpoint(port int) string { return fmt.Sprintf("http://127.0.0.1:%d/storage/v1/", port) }

// startGCS runs fake-gcs-server on port (chosen before, so that a target could be configured
// while nothing listened there) and creates bucket. A missing binary fails the test.
func startGCS(t *testing.T, port int, bucket string) {
	t.Helper()
	endpoint := gcsEndpoint(port)
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	emulator.Start(t, emulator.Spec{
		Name: "fake-gcs-server",
		Path: emulator.Tool(t, "bin/fake-gcs-server"),
		Args: []string{"-scheme", "http", "-host", "127.0.0.1", "-port", strconv.Itoa(port),
			"-backend", "filesystem", "-filesystem-root", t.TempDir(), "-log-level", "warn"},
		Port: port,
		Ready: func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"b?project=custos-test", nil)
			if err != nil {
				return err
			}
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("list buckets: %s", resp.Status)
			}
			return nil
		},
	})
	resp, err := hc.Post(endpoint+"b?project=custos-test", "application/json", strings.NewReader(`{"name":"`+bucket+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create bucket %s: %s", bucket, resp.Status)
	}
}

func putObject(ctx context.Context, tg target.Target, name string, data []byte) error {
	return tg.Put(ctx, name, bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)})
}

func getObject(ctx context.Context, tg target.Target, name string) ([]byte, error) {
	rc, err := tg.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// Targets that are down when they are opened (an fs path that cannot be created, a GCS
// endpoint on which nothing listens) do not fail OpenTargets: they keep their names and kinds,
// their operations fail with retryable errors, and once they are back Puts and Gets work.
func TestOpenTargetsUnreachable(t *testing.T) {
	t.Parallel()
	offsite, mount := blockedMount(t)
	port := emulator.FreePort(t)
	c, _ := load(t, fmt.Sprintf(`
nats: {url: u}
keys: {file: k}
targets:
  - {name: local, kind: fs, path: data/local}
  - {name: offsite, kind: fs, path: %q, attempts: 1}
  - {name: cloud, kind: gcs, endpoint: %q, bucket: custos-backups, attempts: 1}
classes: {critical: {targets: [local, offsite, cloud], min_replicas: 1}}
`, offsite, gcsEndpoint(port)))
	ctx := t.Context()
	ts, err := c.OpenTargets(ctx)
	if err != nil {
		t.Fatalf("OpenTargets with two targets down: %v", err)
	}
	closeAll(t, ts)
	for i, want := range [][2]string{{"fs:local", "fs"}, {"fs:offsite", "fs"}, {"gcs:cloud", "gcs"}} {
		if ts[i].Name() != want[0] || ts[i].Kind() != want[1] {
			t.Fatalf("target %d is %s (%s), want %s (%s)", i, ts[i].Name(), ts[i].Kind(), want[0], want[1])
		}
	}
	data := []byte("sealed pack")
	if err := putObject(ctx, ts[0], "packs/a", data); err != nil {
		t.Fatalf("Put on the reachable target: %v", err)
	}
	err = putObject(ctx, ts[1], "packs/a", data)
	if !errors.Is(err, lazy.ErrUnavailable) || errors.Is(err, target.ErrPermanent) || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Put on the unmounted fs target = %v, want lazy.ErrUnavailable with the cause, retryable", err)
	}
	if err := putObject(ctx, ts[2], "packs/a", data); err == nil || errors.Is(err, target.ErrPermanent) {
		t.Fatalf("Put on the GCS target that is down = %v, want a retryable error", err)
	}

	mount()
	startGCS(t, port, "custos-backups")
	for _, tg := range ts[1:] {
		deadline := time.Now().Add(30 * time.Second) // the lazy target tries again every 5s
		for {
			err := putObject(ctx, tg, "packs/a", data)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Put on %s after it came back: %v", tg.Name(), err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got, err := getObject(ctx, tg, "packs/a"); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get from %s = %q, %v", tg.Name(), got, err)
		}
	}
	if _, err := os.Stat(filepath.Join(offsite, "packs", "a")); err != nil {
		t.Fatalf("the fs object is not under the configured path: %v", err)
	}
}

// A configuration error still fails OpenTargets at once, naming the target.
func TestOpenTargetsConfigError(t *testing.T) {
	t.Parallel()
	c, _ := load(t, `
nats: {url: u}
keys: {file: k}
targets:
  - {name: local, kind: fs, path: data/local}
  - {name: cloud, kind: s3, endpoint: "http://127.0.0.1:1", bucket: b, lock_mode: forever}
classes: {c: {targets: [local, cloud]}}
`)
	ts, err := c.OpenTargets(t.Context())
	if err == nil || !strings.Contains(err.Error(), "target cloud") || !strings.Contains(err.Error(), "lock mode") {
		closeAll(t, ts)
		t.Fatalf("OpenTargets = %v, want the lock mode error naming target cloud", err)
	}
}
