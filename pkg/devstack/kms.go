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
)

// KMS is a running AWS KMS emulator (local-kms, installed by `make emulators`).
type KMS struct {
	*Process
	Endpoint string
	// Env holds the region and placeholder credentials a client needs.
	Env []string
}

// StartKMS runs local-kms on a free port, storing under dir.
func StartKMS(ctx context.Context, dir string) (*KMS, error) {
	bin, err := Tool("bin/local-kms")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	probe := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	p, err := StartProcess(Spec{
		Name: "local-kms", Path: bin, Dir: dir, Port: port,
		Env: []string{"PORT=" + strconv.Itoa(port), "KMS_REGION=us-east-1", "KMS_ACCOUNT_ID=111122223333",
			"KMS_DATA_PATH=" + dir, "KMS_SEED_PATH=" + filepath.Join(dir, "no-seed.yaml")},
		Ready: func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint+"/", strings.NewReader("{}"))
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
				return fmt.Errorf("local-kms: %s", resp.Status)
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	return &KMS{Process: p, Endpoint: endpoint,
		Env: []string{"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=custos-dev", "AWS_SECRET_ACCESS_KEY=custos-dev"}}, nil
}

// SoftHSMModule returns the path of Debian's SoftHSM2 PKCS#11 library (installed by `make
// emulators`).
func SoftHSMModule() (string, error) {
	for _, p := range []string{"/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("devstack: SoftHSM2 is not installed: run make emulators")
}

// InitSoftHSMToken makes a SoftHSM2 token store under dir with one token, and returns the
// module path and the environment (SOFTHSM2_CONF) every process using it needs. Processes that
// load the library must start after this returns: SoftHSM2 reads its token directory once.
func InitSoftHSMToken(dir, label, pin string) (module string, env []string, err error) {
	if module, err = SoftHSMModule(); err != nil {
		return "", nil, err
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return "", nil, err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		return "", nil, err
	}
	env = []string{"SOFTHSM2_CONF=" + conf}
	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", pin+"-so")
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("devstack: softhsm2-util --init-token: %v: %s", err, out)
	}
	return module, env, nil
}
