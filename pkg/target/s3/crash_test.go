package s3_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/s3"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

// crashEnv carries the endpoint and bucket to the child process of TestCrashMidUpload.
const (
	crashEnvEndpoint = "CUSTOS_S3_CRASH_ENDPOINT"
	crashEnvBucket   = "CUSTOS_S3_CRASH_BUCKET"
	crashSize        = 8 * s3.MinPartSize
)

// hookAfter reads from r and calls hook once, when more than after bytes were read.
type hookAfter struct {
	r     io.ReadSeeker
	after int64
	hook  func()
	n     int64
	fired bool
}

func (h *hookAfter) Read(p []byte) (int, error) {
	if h.n >= h.after && !h.fired {
		h.fired = true
		h.hook()
	}
	n, err := h.r.Read(p)
	h.n += int64(n)
	return n, err
}

func (h *hookAfter) Seek(off int64, whence int) (int64, error) {
	pos, err := h.r.Seek(off, whence)
	h.n = pos
	return pos, err
}

// TestCrashMidUpload checks that a multipart Put interrupted midway (its context cancelled,
// its process killed, the service killed) leaves nothing visible under the name, and that
// AbortIncomplete removes what a crash left on the service.
func TestCrashMidUpload(t *testing.T) {
	t.Run("ContextCancelled", func(t *testing.T) {
		srv := startServer(t)
		bucket := srv.newBucket(t)
		tg := open(t, smallParts(srv.config(bucket)))
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		r := &hookAfter{r: newGenReader(2, crashSize), after: 3 * s3.MinPartSize, hook: cancel}
		err := tg.Put(ctx, "packs/c", r, crashSize, target.PutOptions{SHA256: genSum(t, 2, crashSize)})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put cancelled midway = %v, want context.Canceled", err)
		}
		targettest.AssertMissing(t, tg, "packs/c")
		if ups := srv.uploads(t, bucket); len(ups) != 0 {
			t.Errorf("uploads left after a cancelled Put = %v, want none: Put aborts its own", ups)
		}
	})

	t.Run("ClientKilled", func(t *testing.T) {
		srv := startServer(t)
		bucket := srv.newBucket(t)
		// The child runs this test binary's TestCrashChild, which starts a Put and stalls
		// it midway; it is then killed without any chance to clean up.
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnvEndpoint+"="+srv.endpoint, crashEnvBucket+"="+bucket)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		midway := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if sc.Text() == "midway" {
					midway <- true
				}
			}
			close(midway)
		}()
		select {
		case ok := <-midway:
			if !ok {
				t.Fatal("child exited before reaching the middle of its Put")
			}
		case <-time.After(time.Minute):
			t.Fatal("child did not reach the middle of its Put within a minute")
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()

		tg := open(t, smallParts(srv.config(bucket)))
		targettest.AssertMissing(t, tg, "packs/k")
		if ups := srv.uploads(t, bucket); !slices.Equal(ups, []string{"packs/k"}) {
			t.Fatalf("uploads after the crash = %v, want [packs/k]", ups)
		}
		if n, err := tg.AbortIncomplete(t.Context(), time.Hour); err != nil || n != 0 {
			t.Errorf("AbortIncomplete(1h) = %d, %v; want 0: the upload is fresh", n, err)
		}
		if n, err := tg.AbortIncomplete(t.Context(), 0); err != nil || n != 1 {
			t.Errorf("AbortIncomplete(0) = %d, %v; want 1", n, err)
		}
		if ups := srv.uploads(t, bucket); len(ups) != 0 {
			t.Errorf("uploads after AbortIncomplete = %v, want none", ups)
		}
		targettest.Put(t, tg, "packs/k", []byte("the name is free")) // nothing blocks a new Put
	})

	t.Run("ServerKilled", func(t *testing.T) {
		srv := startServer(t)
		bucket := srv.newBucket(t)
		tg := open(t, smallParts(srv.config(bucket)))
		r := &hookAfter{r: newGenReader(3, crashSize), after: 3 * s3.MinPartSize, hook: srv.proc.Stop}
		err := tg.Put(t.Context(), "packs/s", r, crashSize, target.PutOptions{SHA256: genSum(t, 3, crashSize)})
		if err == nil || errors.Is(err, target.ErrPermanent) {
			t.Fatalf("Put with the service gone = %v, want a transient error", err)
		}
		if err := srv.proc.Start(); err != nil {
			t.Fatal(err)
		}
		targettest.AssertMissing(t, tg, "packs/s")
		// The Put could not abort its upload with the service down.
		if ups := srv.uploads(t, bucket); !slices.Equal(ups, []string{"packs/s"}) {
			t.Fatalf("uploads after the outage = %v, want [packs/s]", ups)
		}
		if n, err := tg.AbortIncomplete(t.Context(), 0); err != nil || n != 1 {
			t.Errorf("AbortIncomplete(0) = %d, %v; want 1", n, err)
		}
		if ups := srv.uploads(t, bucket); len(ups) != 0 {
			t.Errorf("uploads after AbortIncomplete = %v, want none", ups)
		}
	})
}

// TestCrashChild is the child process of TestCrashMidUpload/ClientKilled: it does nothing
// unless started by it.
func TestCrashChild(t *testing.T) {
	endpoint, bucket := os.Getenv(crashEnvEndpoint), os.Getenv(crashEnvBucket)
	if endpoint == "" {
		return
	}
	tg, err := s3.New(t.Context(), smallParts(s3.Config{
		Provider: "versitygw", Endpoint: endpoint, Bucket: bucket,
		AccessKeyID: accessKey, SecretAccessKey: secretKey,
	}))
	if err != nil {
		t.Fatal(err)
	}
	stall := func() {
		os.Stdout.WriteString("midway\n")
		time.Sleep(time.Hour) // until killed
	}
	r := &hookAfter{r: newGenReader(4, crashSize), after: 3 * s3.MinPartSize, hook: stall}
	err = tg.Put(t.Context(), "packs/k", r, crashSize, target.PutOptions{SHA256: genSum(t, 4, crashSize)})
	t.Fatalf("Put returned %v; the parent should have killed this process", err)
}

func smallParts(c s3.Config) s3.Config {
	c.PartSize, c.Concurrency = s3.MinPartSize, 2
	return c
}

func genSum(t *testing.T, seed uint64, size int64) [32]byte {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, newGenReader(seed, size)); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}
