package awskms_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/custos-dev/custos/pkg/internal/emulator"
	"github.com/custos-dev/custos/pkg/keys/awskms"
)

const (
	testRegion  = "eu-west-1"
	testAccount = "111122223333"
)

// server is one local-kms process with its own data directory.
type server struct {
	proc     *emulator.Process
	endpoint string
	raw      *kms.Client // the test's own view of the service, beside the ring
	aliases  atomic.Int64
}

// startServer runs local-kms (installed by deploy/emulators/kms/install.sh) on a random port.
// A missing binary fails the test.
func startServer(t *testing.T) *server {
	t.Helper()
	bin := emulator.Tool(t, "bin/local-kms")
	port := emulator.FreePort(t)
	data := t.TempDir()
	s := &server{endpoint: fmt.Sprintf("http://127.0.0.1:%d", port)}
	probe := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	s.proc = emulator.Start(t, emulator.Spec{
		Name: "local-kms",
		Path: bin,
		Env: []string{
			"PORT=" + strconv.Itoa(port),
			"KMS_REGION=" + testRegion,
			"KMS_ACCOUNT_ID=" + testAccount,
			"KMS_DATA_PATH=" + data,
			"KMS_SEED_PATH=" + filepath.Join(data, "no-seed.yaml"), // not the default /init/seed.yaml
		},
		Port: port,
		Ready: func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint+"/", strings.NewReader("{}"))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/x-amz-json-1.1")
			req.Header.Set("X-Amz-Target", "TrentService.ListKeys")
			resp, err := probe.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("list keys: %s", resp.Status)
			}
			return nil
		},
	})
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	s.raw = kms.New(kms.Options{
		Region:       testRegion,
		BaseEndpoint: aws.String(s.endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		HTTPClient:   hc,
	})
	t.Cleanup(hc.CloseIdleConnections)
	return s
}

// config returns a ring configuration on this server for alias.
func (s *server) config(alias string) awskms.Config {
	return awskms.Config{
		Endpoint:        s.endpoint,
		Region:          testRegion,
		Alias:           alias,
		AccessKeyID:     "test",
		SecretAccessKey: "test-secret",
	}
}

// newAlias returns an alias no other test on this server uses.
func (s *server) newAlias() string {
	return fmt.Sprintf("alias/custos-test-%d", s.aliases.Add(1))
}

// open opens the ring of alias and closes it when the test ends.
func (s *server) open(t *testing.T, alias string, create bool) *awskms.Ring {
	t.Helper()
	r, err := awskms.Open(t.Context(), s.config(alias), create)
	if err != nil {
		t.Fatalf("Open %s: %v", alias, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}
