package devstack

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hashicorp/go-retryablehttp"
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
	// WorkerEnv, when set, is Env with a least-privilege credential instead of the emulator's
	// root: enough for a worker's target (store with locks, read, list, delete unlocked
	// objects), not to change locks, the bucket's lock configuration or policy, or delete the
	// bucket. S3 only (S3WorkerPolicy).
	WorkerEnv []string
	// Target is the YAML of one entry of the config's targets list (without the name line).
	Target string
}

// Development-only credentials of the local S3 emulator, its root and a worker user; never used
// outside the dev stack.
const (
	devS3AccessKey       = "custos-dev"
	devS3SecretKey       = "custos-dev-secret"
	devS3WorkerAccessKey = "custos-dev-worker"
	devS3WorkerSecretKey = "custos-dev-worker-secret"
)

// StartS3 runs VersityGW (installed by `make emulators`) on a free port with its data under dir,
// and creates bucket with Object Lock enabled, so retention is enforced as on a real service.
// Env holds the root credential; WorkerEnv a user of the emulator's IAM (under dir/iam) that
// the bucket's policy allows only what a worker needs (S3WorkerPolicy).
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
	data, versions, iam := filepath.Join(dir, "data"), filepath.Join(dir, "versions"), filepath.Join(dir, "iam")
	for _, d := range []string{data, versions, iam} {
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
		// --iam-dir: the gateway's own IAM, which holds the worker user.
		Args: []string{"--port", fmt.Sprintf("127.0.0.1:%d", port), "--quiet", "--iam-dir", iam, "posix", "--versioning-dir", versions, data},
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
	root := aws.Credentials{AccessKeyID: devS3AccessKey, SecretAccessKey: devS3SecretKey}
	err = CreateS3User(ctx, endpoint, root, S3User{AccessKey: devS3WorkerAccessKey, SecretKey: devS3WorkerSecretKey, Role: "user"})
	if err == nil {
		_, err = client.PutBucketPolicy(ctx, &awss3.PutBucketPolicyInput{
			Bucket: aws.String(bucket), Policy: aws.String(S3WorkerPolicy(bucket, devS3WorkerAccessKey)),
		})
	}
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("devstack: worker user for bucket %s: %w", bucket, err)
	}
	return &Cloud{
		Process: p, Kind: "s3", Endpoint: endpoint,
		Env:       []string{"AWS_ACCESS_KEY_ID=" + devS3AccessKey, "AWS_SECRET_ACCESS_KEY=" + devS3SecretKey, "AWS_REGION=us-east-1"},
		WorkerEnv: []string{"AWS_ACCESS_KEY_ID=" + devS3WorkerAccessKey, "AWS_SECRET_ACCESS_KEY=" + devS3WorkerSecretKey, "AWS_REGION=us-east-1"},
		Target:    fmt.Sprintf("    kind: s3\n    provider: versitygw\n    endpoint: %s\n    bucket: %s\n", endpoint, bucket),
	}, nil
}

// StartGCS runs fake-gcs-server (installed by `make emulators`) on a free port, storing under
// dir, and creates bucket. The emulator does not enforce retention (docs/targets/gcs.md).
func StartGCS(ctx context.Context, dir, bucket string) (*Cloud, error) {
	bin, err := Tool("bin/fake-gcs-server")
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	endpoint := fmt.Sprintf("http://127.0.0.1:%d/storage/v1/", port)
	rc := retryablehttp.NewClient()
	rc.Logger, rc.RetryMax, rc.RetryWaitMin = nil, 2, 100*time.Millisecond
	hc := rc.StandardClient()
	p, err := StartProcess(Spec{
		Name: "fake-gcs-server", Path: bin, Dir: dir, Port: port,
		Args: []string{"-scheme", "http", "-host", "127.0.0.1", "-port", strconv.Itoa(port),
			"-backend", "filesystem", "-filesystem-root", filepath.Join(dir, "data"), "-log-level", "warn"},
		Ready: func(ctx context.Context) error {
			return httpOK(ctx, hc, http.MethodGet, endpoint+"b?project=custos-dev", "")
		},
	})
	if err != nil {
		return nil, err
	}
	body := fmt.Sprintf(`{"name":%q}`, bucket)
	if err := httpOK(ctx, hc, http.MethodPost, endpoint+"b?project=custos-dev", body); err != nil {
		p.Stop()
		return nil, fmt.Errorf("devstack: create bucket %s: %w", bucket, err)
	}
	return &Cloud{Process: p, Kind: "gcs", Endpoint: endpoint,
		Target: fmt.Sprintf("    kind: gcs\n    endpoint: %s\n    bucket: %s\n", endpoint, bucket)}, nil
}

// Azurite's documented development account; it only ever exists inside the local emulator.
const (
	devAzureAccount = "devstoreaccount1"
	devAzureKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// StartAzure runs Azurite's blob service (installed by `make emulators`, needs node) on a free
// port, storing under dir, and creates container. Azurite does not implement immutability.
func StartAzure(ctx context.Context, dir, container string) (*Cloud, error) {
	main, err := Tool("azurite/node_modules/azurite/dist/src/blob/main.js")
	if err != nil {
		return nil, err
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("devstack: Azurite needs node: %w", err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	accountURL := fmt.Sprintf("http://127.0.0.1:%d/%s", port, devAzureAccount)
	p, err := StartProcess(Spec{
		Name: "azurite", Path: node, Dir: dir, Port: port,
		Args: []string{main, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
			"--location", filepath.Join(dir, "data"), "--disableTelemetry", "--skipApiVersionCheck",
			"--blobKeepAliveTimeout", "120"},
	})
	if err != nil {
		return nil, err
	}
	cred, err := azblob.NewSharedKeyCredential(devAzureAccount, devAzureKey)
	if err == nil {
		var client *azblob.Client
		client, err = azblob.NewClientWithSharedKeyCredential(accountURL, cred, nil)
		if err == nil {
			_, err = client.CreateContainer(ctx, container, nil)
		}
	}
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("devstack: create container %s: %w", container, err)
	}
	return &Cloud{Process: p, Kind: "azure", Endpoint: accountURL,
		Env:    []string{"AZURE_STORAGE_ACCOUNT=" + devAzureAccount, "AZURE_STORAGE_KEY=" + devAzureKey},
		Target: fmt.Sprintf("    kind: azure\n    endpoint: %s\n    container: %s\n", accountURL, container)}, nil
}

// httpOK sends one request and wants a 2xx answer.
func httpOK(ctx context.Context, hc *http.Client, method, url, body string) error {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s", method, url, resp.Status)
	}
	return nil
}
