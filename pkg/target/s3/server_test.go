package s3_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/custos-dev/custos/pkg/internal/emulator"
	"github.com/custos-dev/custos/pkg/target/s3"
)

// Test credentials of the gateway's root user; they exist only inside the test's process.
const (
	accessKey = "custos-test"
	secretKey = "custos-test-secret-do-not-log"
)

// server is a VersityGW process serving a posix directory with versioning, which Object Lock
// needs, and an admin client for what the target does not do (create buckets, list uploads).
type server struct {
	proc     *emulator.Process
	endpoint string
	admin    *awss3.Client
	buckets  atomic.Int64
}

// startServer runs VersityGW for t on a random port with its data in t's temp directory. A
// missing binary fails t (emulator.Tool), it never skips.
func startServer(t *testing.T) *server {
	t.Helper()
	bin := emulator.Tool(t, "bin/versitygw")
	dir := t.TempDir()
	data, versions, iam := filepath.Join(dir, "data"), filepath.Join(dir, "versions"), filepath.Join(dir, "iam")
	for _, d := range []string{data, versions, iam} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	port := emulator.FreePort(t)
	srv := &server{endpoint: fmt.Sprintf("http://127.0.0.1:%d", port)}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	srv.admin = awss3.New(awss3.Options{
		BaseEndpoint: aws.String(srv.endpoint),
		Region:       "us-east-1",
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""),
		HTTPClient:   &http.Client{Transport: tr},
	})
	srv.proc = emulator.Start(t, emulator.Spec{
		Name: "versitygw",
		Path: bin,
		// Global options go before the backend command. --versioning-dir enables bucket
		// versioning, without which the posix backend refuses Object Lock buckets. --iam-dir
		// runs the gateway's own IAM, so root can create users (createUser).
		Args: []string{"--port", fmt.Sprintf("127.0.0.1:%d", port), "--quiet", "--iam-dir", iam, "posix", "--versioning-dir", versions, data},
		// Credentials through the environment, not the command line that ps shows.
		Env:  []string{"ROOT_ACCESS_KEY_ID=" + accessKey, "ROOT_SECRET_ACCESS_KEY=" + secretKey},
		Port: port,
		Ready: func(ctx context.Context) error {
			_, err := srv.admin.ListBuckets(ctx, &awss3.ListBucketsInput{})
			return err
		},
	})
	return srv
}

// newBucket creates an empty bucket with Object Lock enabled.
func (s *server) newBucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("custos-%03d", s.buckets.Add(1))
	_, err := s.admin.CreateBucket(t.Context(), &awss3.CreateBucketInput{
		Bucket:                     aws.String(name),
		ObjectLockEnabledForBucket: aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return name
}

// config is a target configuration for bucket on s.
func (s *server) config(bucket string) s3.Config {
	return s3.Config{
		Provider:        "versitygw",
		Endpoint:        s.endpoint,
		Bucket:          bucket,
		AccessKeyID:     accessKey,
		SecretAccessKey: secretKey,
	}
}

// newTarget opens a target on a fresh bucket, closed when t ends.
func (s *server) newTarget(t testing.TB, adjust func(*s3.Config)) *s3.Target {
	t.Helper()
	cfg := s.config(s.newBucket(t))
	if adjust != nil {
		adjust(&cfg)
	}
	return open(t, cfg)
}

func open(t testing.TB, cfg s3.Config) *s3.Target {
	t.Helper()
	tg, err := s3.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg
}

// uploads lists the multipart uploads in progress in bucket.
func (s *server) uploads(t testing.TB, bucket string) []string {
	t.Helper()
	out, err := s.admin.ListMultipartUploads(t.Context(), &awss3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatalf("list multipart uploads: %v", err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, aws.ToString(u.Key))
	}
	return keys
}
