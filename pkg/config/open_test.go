package config_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/target"
)

func load(t *testing.T, yaml string) (*config.Config, string) {
	t.Helper()
	path := writeConfig(t, yaml)
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return c, filepath.Dir(path)
}

func closeAll(t *testing.T, ts []target.Target) {
	t.Cleanup(func() {
		for _, tg := range ts {
			tg.Close()
		}
	})
}

// OpenTargets builds each target under the configuration's directory, wrapped with the
// concurrency limit (default 16) and the rest of the stack.
func TestOpenTargets(t *testing.T) {
	t.Parallel()
	c, dir := load(t, `
nats: {url: u}
keys: {file: k}
targets:
  - {name: primary, kind: fs, path: data/primary}
  - {name: narrow, kind: fs, path: data/narrow, concurrency: 2}
classes: {critical: {targets: [primary, narrow]}}
`)
	ts, err := c.OpenTargets(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	closeAll(t, ts)
	if len(ts) != 2 || ts[0].Name() != "fs:primary" || ts[1].Name() != "fs:narrow" || ts[0].Kind() != "fs" {
		t.Fatalf("targets %v", ts)
	}
	for _, sub := range []string{"data/primary", "data/narrow"} {
		if fi, err := os.Stat(filepath.Join(dir, sub)); err != nil || !fi.IsDir() {
			t.Fatalf("target root %s not created under the configuration's directory: %v", sub, err)
		}
	}
	ctx := t.Context()
	data := []byte("object")
	for _, tg := range ts {
		if err := tg.Put(ctx, "o", bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		tg    target.Target
		limit int
	}{{ts[0], 16}, {ts[1], 2}} {
		var open []io.Closer
		for i := range tc.limit {
			rc, err := tc.tg.Get(ctx, "o")
			if err != nil {
				t.Fatalf("%s: Get %d of %d: %v", tc.tg.Name(), i+1, tc.limit, err)
			}
			open = append(open, rc)
		}
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		if rc, err := tc.tg.Get(short, "o"); !errors.Is(err, context.DeadlineExceeded) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("%s: Get beyond %d open bodies = %v, want to wait for a slot", tc.tg.Name(), tc.limit, err)
		}
		cancel()
		for _, rc := range open {
			rc.Close()
		}
	}
}

func TestOpenTargetsError(t *testing.T) {
	t.Parallel()
	// A configuration error fails at once; an unreachable target does not (TestOpenTargetsUnreachable).
	c, _ := load(t, "nats: {url: u}\nkeys: {file: k}\ntargets: [{name: a, kind: s3, endpoint: 'http://127.0.0.1:1', bucket: b, lock_mode: forever}]\nclasses: {c: {targets: [a]}}\n")
	if ts, err := c.OpenTargets(t.Context()); err == nil || !strings.Contains(err.Error(), "target a") {
		closeAll(t, ts)
		t.Fatalf("OpenTargets = %v, want an error naming target a", err)
	}
}

// Open connects every part a configuration names, resolving the key file against its directory.
func TestOpen(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	c, dir := load(t, fmt.Sprintf(`
nats: {url: %q}
keys: {file: keys/custos.key, create: true}
targets: [{name: a, kind: fs, path: data/a}, {name: b, kind: fs, path: data/b}]
classes: {critical: {targets: [a, b]}}
`, ns.URL))
	ctx := t.Context()
	p, err := c.Open(ctx, "config-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := os.Stat(filepath.Join(dir, "keys", "custos.key")); err != nil {
		t.Fatalf("key file not created beside the configuration: %v", err)
	}
	if !p.NC.IsConnected() || len(p.Targets) != 2 {
		t.Fatalf("parts %+v", p)
	}
	if _, err := p.Keys.DataKey(ctx, "catalog"); err != nil {
		t.Fatalf("key store: %v", err)
	}
	if packs, err := p.Index.Packs(ctx); err != nil || len(packs) != 0 {
		t.Fatalf("index: %v, %v", packs, err)
	}
	if p.KMS.Pseudonym("t", "c") == "" {
		t.Fatal("no pseudonyms")
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	const rest = "targets: [{name: a, kind: fs, path: data/a}]\nclasses: {critical: {targets: [a]}}\n"
	for _, tc := range []struct {
		name string
		yaml string
		is   error
		want string
	}{
		{"broker unreachable", "nats: {url: 'nats://127.0.0.1:1'}\nkeys: {file: k, create: true}\n" + rest, nil, "connect to nats"},
		{"key file missing", fmt.Sprintf("nats: {url: %q}\nkeys: {file: keys/missing.key}\n", ns.URL) + rest, fs.ErrNotExist, ""},
		{"credentials missing", fmt.Sprintf("nats: {url: %q, creds_file: nats.creds}\nkeys: {file: k, create: true}\n", ns.URL) + rest, nil, "{dir}/nats.creds"},
		{"target cannot be opened", fmt.Sprintf("nats: {url: %q}\nkeys: {file: k, create: true}\n", ns.URL) +
			"targets: [{name: a, kind: s3, endpoint: 'http://127.0.0.1:1', bucket: b, lock_mode: forever}]\nclasses: {critical: {targets: [a]}}\n", nil, "target a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, dir := load(t, tc.yaml)
			want := strings.ReplaceAll(tc.want, "{dir}", dir) // paths resolve against the file's directory
			p, err := c.Open(t.Context(), "config-test", nil)
			if err == nil {
				p.Close()
				t.Fatal("Open succeeded")
			}
			if p != nil {
				t.Fatal("Open returned parts with an error")
			}
			if (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), want) {
				t.Fatalf("Open = %v, want %v / %q", err, tc.is, want)
			}
		})
	}
}
