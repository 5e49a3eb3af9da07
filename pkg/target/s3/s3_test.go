package s3_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/s3"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestConformance runs the suite with locks enforced: VersityGW implements Object Lock.
func TestConformance(t *testing.T) {
	srv := startServer(t)
	for _, c := range []struct {
		name   string
		adjust func(*s3.Config)
	}{
		{"defaults", nil},
		// The smallest part size sends the suite's 5 MiB object through multipart.
		{"prefix-multipart", func(c *s3.Config) {
			c.Prefix = "custos/backups"
			c.PartSize = s3.MinPartSize
			c.Concurrency = 2
		}},
		// A service of unknown features: no x-amz-checksum-sha256 (Content-MD5 where Object
		// Lock needs it), create-only checked with HeadObject as well as If-None-Match.
		{"generic-profile", func(c *s3.Config) {
			c.Provider, c.UsePathStyle = "generic", true
			c.PartSize = s3.MinPartSize
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			targettest.Run(t, func(t *testing.T) target.Target { return srv.newTarget(t, c.adjust) })
		})
	}
}

func TestStatReportsChecksum(t *testing.T) {
	srv := startServer(t)
	tg := srv.newTarget(t, func(c *s3.Config) { c.PartSize = s3.MinPartSize })
	for name, n := range map[string]int{"single": 1000, "multipart": s3.MinPartSize*2 + 7} {
		data := targettest.Data(3, n)
		targettest.Put(t, tg, name, data)
		info, err := tg.Stat(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if info.SHA256 != sha256.Sum256(data) || info.Size != int64(n) || info.ModTime.IsZero() {
			t.Errorf("Stat(%s) = %+v, want size %d and its sha256", name, info, n)
		}
	}
}

func TestPrefixIsolation(t *testing.T) {
	srv := startServer(t)
	bucket := srv.newBucket(t)
	a, b := srv.config(bucket), srv.config(bucket)
	a.Prefix, b.Prefix = "a", "b/"
	ta, tb := open(t, a), open(t, b)
	targettest.Put(t, ta, "x", []byte("from a"))
	targettest.Put(t, tb, "x", []byte("from b"))
	targettest.AssertContent(t, ta, "x", []byte("from a"))
	targettest.AssertContent(t, tb, "x", []byte("from b"))
	var names []string
	if err := ta.List(t.Context(), "", func(i target.Info) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "x" {
		t.Errorf("List on prefix a = %v, want [x]", names)
	}
	if ta.Name() != "s3:"+bucket+"/a" {
		t.Errorf("Name = %q", ta.Name())
	}
}

// TestErrorsHideCredentials checks that a rejected request is permanent and that no error
// carries the secret key.
func TestErrorsHideCredentials(t *testing.T) {
	srv := startServer(t)
	cfg := srv.config(srv.newBucket(t))
	cfg.SecretAccessKey = "wrong-secret-must-not-leak"
	tg := open(t, cfg)
	data := []byte("x")
	errs := map[string]error{
		"Put":    tg.Put(t.Context(), "x", bytes.NewReader(data), 1, target.PutOptions{SHA256: sha256.Sum256(data)}),
		"List":   tg.List(t.Context(), "", func(target.Info) error { return nil }),
		"Delete": tg.Delete(t.Context(), "x"),
	}
	_, errs["Stat"] = tg.Stat(t.Context(), "x")
	_, errs["Get"] = tg.Get(t.Context(), "x")
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(f, cfg); strings.Contains(out, cfg.SecretAccessKey) {
			t.Errorf("Sprintf(%q, cfg) shows the secret: %s", f, out)
		}
	}
	if out := fmt.Sprintf("%+v", tg); strings.Contains(out, cfg.SecretAccessKey) {
		t.Errorf("the target holds the secret where formatting shows it")
	}
	for op, err := range errs {
		if !errors.Is(err, target.ErrPermanent) {
			t.Errorf("%s with a wrong secret = %v, want a permanent error", op, err)
		}
		if err != nil && bytes.Contains([]byte(err.Error()), []byte(cfg.SecretAccessKey)) {
			t.Errorf("%s error shows the secret: %v", op, err)
		}
	}
}

// TestUnreachableIsTransient checks that network errors stay retryable.
func TestUnreachableIsTransient(t *testing.T) {
	srv := startServer(t)
	tg := srv.newTarget(t, nil)
	srv.proc.Stop()
	_, err := tg.Stat(t.Context(), "x")
	if err == nil || errors.Is(err, target.ErrPermanent) {
		t.Errorf("Stat with the server down = %v, want a transient error", err)
	}
	if err := srv.proc.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.Stat(t.Context(), "x"); !errors.Is(err, target.ErrNotFound) {
		t.Errorf("Stat after restart = %v, want ErrNotFound", err)
	}
}

func TestConfig(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		cfg  s3.Config
		ok   bool
	}{
		{"no bucket", s3.Config{Region: "us-east-1"}, false},
		{"unknown provider", s3.Config{Bucket: "b", Provider: "nope"}, false},
		{"r2 without account", s3.Config{Bucket: "b", Provider: "r2"}, false},
		{"r2", s3.Config{Bucket: "b", Provider: "r2", Account: "abc"}, true},
		{"b2 without region", s3.Config{Bucket: "b", Provider: "b2"}, false},
		{"b2", s3.Config{Bucket: "b", Provider: "b2", Region: "us-west-004"}, true},
		{"credentials in endpoint", s3.Config{Bucket: "b", Endpoint: "https://k:s@example.com"}, false},
		{"bad lock mode", s3.Config{Bucket: "b", Region: "us-east-1", LockMode: "forever"}, false},
		{"part size too small", s3.Config{Bucket: "b", Region: "us-east-1", PartSize: 1 << 20}, false},
		{"half static credentials", s3.Config{Bucket: "b", Region: "us-east-1", AccessKeyID: "k"}, false},
		{"aws", s3.Config{Bucket: "b", Region: "eu-central-1", LockMode: "compliance"}, true},
	} {
		tg, err := s3.New(ctx, c.cfg)
		if (err == nil) != c.ok {
			t.Errorf("%s: New = %v, want ok=%v", c.name, err, c.ok)
		}
		if err == nil {
			tg.Close()
		}
	}
	for _, name := range s3.ProfileNames() {
		if p, ok := s3.LookupProfile(name); !ok || p.Title == "" {
			t.Errorf("profile %s: %+v, %v", name, p, ok)
		}
	}
}
