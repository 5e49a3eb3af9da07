package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/devstack"
	"github.com/custos-dev/custos/pkg/target"
)

// targetBench writes one large pack and many small ones to every kind of target (local disk
// and the three emulators, each on this machine), through the same wrappers the worker uses.
func targetBench(ctx context.Context, packMiB, small int) error {
	dir, err := os.MkdirTemp("", "custos-bench-targets-")
	if err != nil {
		return err
	}
	removeAtExit(dir)
	var yaml strings.Builder
	yaml.WriteString("nats:\n  url: nats://unused\nkeys:\n  file: unused\ntargets:\n  - name: fs\n    kind: fs\n    path: fs\n")
	starts := []func() (*devstack.Cloud, error){
		func() (*devstack.Cloud, error) { return devstack.StartS3(ctx, filepath.Join(dir, "s3"), "bench") },
		func() (*devstack.Cloud, error) { return devstack.StartGCS(ctx, filepath.Join(dir, "gcs"), "bench") },
		func() (*devstack.Cloud, error) { return devstack.StartAzure(ctx, filepath.Join(dir, "azure"), "bench") },
	}
	for _, start := range starts {
		c, err := start()
		if err != nil {
			return err
		}
		defer c.Stop()
		for _, kv := range c.Env {
			k, v, _ := strings.Cut(kv, "=")
			os.Setenv(k, v)
		}
		fmt.Fprintf(&yaml, "  - name: %s\n%s", c.Kind, c.Target)
	}
	yaml.WriteString("classes:\n  bench:\n    targets: [fs, s3, gcs, azure]\n")
	path := filepath.Join(dir, "custos.yaml")
	if err := os.WriteFile(path, []byte(yaml.String()), 0o600); err != nil {
		return err
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	targets, err := cfg.OpenTargets(ctx)
	if err != nil {
		return err
	}
	big := make([]byte, packMiB<<20)
	rand.Read(big) // packs are ciphertext: incompressible
	bigSum := sha256.Sum256(big)
	smallData := big[:64<<10]
	smallSum := sha256.Sum256(smallData)
	for _, t := range targets {
		defer t.Close()
		kind := t.Kind()
		start := time.Now()
		if err := t.Put(ctx, "packs/00/big", bytes.NewReader(big), int64(len(big)), target.PutOptions{SHA256: bigSum}); err != nil {
			return fmt.Errorf("%s: %w", t.Name(), err)
		}
		bench("target_"+kind+"_write_mb_per_s", float64(len(big))/1e6/time.Since(start).Seconds(), "MB/s")

		start = time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, small)
		sem := make(chan struct{}, 16)
		for i := range small {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				name := fmt.Sprintf("packs/%02x/small-%d", i%256, i)
				if err := t.Put(ctx, name, bytes.NewReader(smallData), int64(len(smallData)), target.PutOptions{SHA256: smallSum}); err != nil {
					errs <- fmt.Errorf("%s: %w", t.Name(), err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return err
		}
		bench("target_"+kind+"_small_packs_per_s", float64(small)/time.Since(start).Seconds(), "objects/s")
	}
	return nil
}
