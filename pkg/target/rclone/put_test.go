package rclone_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/lazy"
	"github.com/custos-dev/custos/pkg/target/rclone"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

// Two targets on one SFTP directory share nothing in the process, as two workers would not:
// the server's hard link alone makes exactly one of their Puts of a name succeed.
func TestSFTPCreateOnlyAcrossTargets(t *testing.T) {
	srv := startSFTP(t)
	cfg := srv.config(t)
	const n = 6
	tgs := make([]*rclone.Target, n)
	for i := range tgs {
		c := cfg
		c.Label = cfg.Label + "-" + string(rune('a'+i))
		tgs[i] = newTarget(t, c)
		t.Cleanup(func() { tgs[i].Close() })
	}
	for round := range 3 {
		name := "packs/race-" + string(rune('0'+round))
		data := make([][]byte, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, tg := range tgs {
			data[i] = targettest.Data(uint64(round*n+i), 200000)
			wg.Go(func() {
				errs[i] = tg.Put(t.Context(), name, bytes.NewReader(data[i]), int64(len(data[i])), target.PutOptions{SHA256: sha256.Sum256(data[i])})
			})
		}
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil && won >= 0:
				t.Fatalf("%s: targets %d and %d both stored it", name, won, i)
			case err == nil:
				won = i
			case !errors.Is(err, target.ErrExists):
				t.Fatalf("%s: Put %d: %v, want nil or ErrExists", name, i, err)
			}
		}
		if won < 0 {
			t.Fatalf("%s: no Put succeeded", name)
		}
		targettest.AssertContent(t, tgs[(won+1)%n], name, data[won])
	}
	assertNoStaging(t, tgs[0])
}

// assertNoStaging checks that no staging file outlived the Puts.
func assertNoStaging(t *testing.T, tg *rclone.Target) {
	t.Helper()
	n, err := rclone.StagingFiles(t.Context(), tg)
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d staging files left in .tmp", n)
	}
}

// A server whose sha256sum lies is caught: the target verifies on the server what it stored,
// and publishes nothing when the hash differs.
func TestSFTPServerHashVerified(t *testing.T) {
	srv := startSFTP(t)
	cfg := srv.config(t)
	cfg.Options["sha256sum_command"] = "echo " + strings.Repeat("0", 64)
	tg := newTarget(t, cfg)
	defer tg.Close()
	data := targettest.Data(1, 5000)
	err := tg.Put(t.Context(), "p", bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)})
	if !errors.Is(err, target.ErrChecksumMismatch) || !strings.Contains(err.Error(), "stored sha256 0000") {
		t.Fatalf("Put with a lying server = %v, want ErrChecksumMismatch from the server's hash", err)
	}
	targettest.AssertMissing(t, tg, "p")
	assertNoStaging(t, tg)
}

// A WebDAV server that stores other bytes than it was sent is caught by reading back.
func TestWebDAVReadBackVerified(t *testing.T) {
	srv := startWebDAV(t)
	srv.corrupt(func(r *http.Request) bool { return r.Method == http.MethodPut })
	tg := newTarget(t, srv.config(t))
	defer tg.Close()
	data := targettest.Data(2, 70000)
	err := tg.Put(t.Context(), "p", bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)})
	if !errors.Is(err, target.ErrChecksumMismatch) || !strings.Contains(err.Error(), "read back") {
		t.Fatalf("Put to a corrupting server = %v, want ErrChecksumMismatch from the read-back", err)
	}
	srv.corrupt(nil)
	targettest.AssertMissing(t, tg, "p")
	assertNoStaging(t, tg)
}

// Refused credentials are permanent and the password appears in no error.
func TestWebDAVWrongPassword(t *testing.T) {
	srv := startWebDAV(t)
	cfg := srv.config(t)
	cfg.Secrets["pass"] = "not-the-" + srv.pass
	tg, err := rclone.New(t.Context(), cfg)
	if err == nil {
		defer tg.Close()
		err = tg.List(t.Context(), "", func(target.Info) error { return nil })
	}
	if !errors.Is(err, target.ErrPermanent) {
		t.Fatalf("wrong password: %v, want a permanent error", err)
	}
	if strings.Contains(err.Error(), cfg.Secrets["pass"]) {
		t.Fatalf("the error shows the password: %v", err)
	}
}

// Refused credentials are permanent, an unreachable server is transient (lazy.Transient), and
// neither error shows the password.
func TestSFTPErrors(t *testing.T) {
	srv := startSFTP(t)
	cfg := srv.config(t)
	delete(cfg.Options, "key_file")
	cfg.Secrets = map[string]string{"pass": "hunter2-is-wrong"}
	_, err := rclone.New(t.Context(), cfg)
	if err == nil || !errors.Is(err, target.ErrPermanent) || lazy.Transient(err) {
		t.Fatalf("wrong password: %v, want a permanent error", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("the error shows the password: %v", err)
	}

	cfg = srv.config(t)
	cfg.Options["port"] = "1" // nothing listens there
	_, err = rclone.New(t.Context(), cfg)
	if err == nil || errors.Is(err, target.ErrPermanent) || !lazy.Transient(err) {
		t.Fatalf("unreachable server: %v, want a transient error", err)
	}

	cfg = srv.config(t)
	cfg.Root = srv.knownHosts // a file
	if _, err = rclone.New(t.Context(), cfg); !errors.Is(err, target.ErrPermanent) || !strings.Contains(err.Error(), "is a file") {
		t.Fatalf("root on a file: %v, want a permanent error", err)
	}
}
