package devstack

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
)

// Cloud is a running storage emulator: the process, where it listens, and the configuration
// lines a Custos target needs to use it.
type Cloud struct {
	*Process
	Kind     string // s3, gcs or azure
	Endpoint string
	// Env is the environment a worker needs for the SDK's standard credential chain to find the
	// emulator's (well-known, local-only) credentials.
	Env []string
	// Target is the YAML of one entry of the config's targets list (without the name line).
	Target string
}

// Development-only credentials of the local S3 emulator; never used outside the dev stack.
const (
	devS3AccessKey = "custos-dev"
	devS3SecretKey = "custos-dev-secret"
)

// StartS3 runs VersityGW (installed by `make emulators`) on a free port with its data under dir,
// and creates bucket with Object Lock enabled, so retention is enforced as on a real service.
func StartS3(ctx context.Context, dir, bucket string) (*Cloud, error) {
	bin, err := Tool("bin/versitygw")
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	data, versions := filepath.Join(dir, "data"), filepath.Join(dir, "versions")
	for _, d := range []string{data, versions} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	client := awss3.New(awss3.Options{
		BaseEndpoint: aws.String(endpoint), Region: "us-east-1", UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(devS3AccessKey, devS3SecretKey, ""),
		HTTPClient:  &http.Client{},
	})
	p, err := StartProcess(Spec{
		Name: "versitygw", Path: bin, Dir: dir, Port: port,
		Args: []string{"--port", fmt.Sprintf("127.0.0.1:%d", port), "--quiet", "posix", "--versioning-dir", versions, data},
		Env:  []string{"ROOT_ACCESS_KEY_ID=" + devS3AccessKey, "ROOT_SECRET_ACCESS_KEY=" + devS3SecretKey},
		Ready: func(ctx context.Context) error {
			_, err := client.ListBuckets(ctx, &awss3.ListBucketsInput{})
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	_, err = client.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(bucket), ObjectLockEnabledForBucket: aws.Bool(true)})
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("devstack: create bucket %s: %w", bucket, err)
	}
	return &Cloud{
		Process: p, Kind: "s3", Endpoint: endpoint,
		Env:    []string{"AWS_ACCESS_KEY_ID=" + devS3AccessKey, "AWS_SECRET_ACCESS_KEY=" + devS3SecretKey, "AWS_REGION=us-east-1"},
		Target: fmt.Sprintf("    kind: s3\n    provider: versitygw\n    endpoint: %s\n    bucket: %s\n", endpoint, bucket),
	}, nil
}
