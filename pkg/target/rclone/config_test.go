package rclone_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/rclone"
	"github.com/custos-dev/custos/pkg/target/registry"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

func TestValidateSpec(t *testing.T) {
	t.Parallel()
	sftp := func(opts map[string]string) registry.Spec {
		o := map[string]string{"host": "h", "known_hosts_file": "/etc/custos/known_hosts"}
		for k, v := range opts {
			if v == "" {
				delete(o, k)
			} else {
				o[k] = v
			}
		}
		return registry.Spec{Name: "far", Kind: "rclone", Provider: "sftp", Options: o}
	}
	if err := rclone.ValidateSpec(sftp(nil)); err != nil {
		t.Fatalf("valid sftp spec: %v", err)
	}
	if err := rclone.ValidateSpec(sftp(map[string]string{rclone.SecretsFileOption: "far.secrets"})); err != nil {
		t.Fatalf("secrets_file is Custos's own option: %v", err)
	}
	for _, tc := range []struct {
		name string
		spec registry.Spec
		want []string
	}{
		{"unknown backend", registry.Spec{Name: "x", Provider: "ftp"}, []string{`backend "ftp" is not supported (supported: b2, box, drive, dropbox, local, pcloud, sftp, webdav)`}},
		{"no backend", registry.Spec{Name: "x"}, []string{`backend "" is not supported`}},
		{"unknown option", sftp(map[string]string{"hots": "h"}), []string{"option hots is not an option of the sftp backend"}},
		{"password in the configuration", sftp(map[string]string{"pass": "hunter2"}), []string{"option pass is a secret", "CUSTOS_TARGET_<LABEL>_PASS"}},
		{"key in the configuration", sftp(map[string]string{"key_pem": "-----BEGIN"}), []string{"option key_pem is a secret"}},
		{"token in the configuration", registry.Spec{Name: "d", Provider: "dropbox", Options: map[string]string{"token": "{}"}}, []string{"option token is a secret"}},
		{"missing required option", sftp(map[string]string{"host": ""}), []string{"option host is required by the sftp backend"}},
		{"host key unchecked", sftp(map[string]string{"known_hosts_file": ""}), []string{"sftp needs the server's host key checked"}},
		{"host key check off", sftp(map[string]string{"known_hosts_file": "none"}), []string{"sftp needs the server's host key checked"}},
		{"trust on first use", sftp(map[string]string{"pin_host_key": "true"}), []string{"option pin_host_key is not accepted"}},
		{"bad label", registry.Spec{Name: "a/b", Provider: "local"}, []string{`label "a/b"`}},
		{"webdav without url", registry.Spec{Name: "w", Provider: "webdav"}, []string{"option url is required by the webdav backend"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := rclone.ValidateSpec(tc.spec)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not hold %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "BEGIN") {
				t.Errorf("the error quotes a secret: %v", err)
			}
		})
	}
}

// Secrets come from the secrets file and the environment (which wins); paths are taken
// relative to the configuration file.
func TestFromSpecSecrets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "far.secrets")
	writeSecrets(t, file, "# the SFTP login\npass = from-file\nkey_file_pass=phrase = with equals\n\n", 0o600)
	env := map[string]string{"CUSTOS_TARGET_FAR_SFTP_PASS": "from-env", "CUSTOS_TARGET_FAR_SFTP_HOST": "ignored: not a secret"}
	spec := registry.Spec{Name: "far-sftp", Kind: "rclone", Provider: "sftp", Path: "/srv/custos",
		Options: map[string]string{"host": "h", "key_file": "keys/id", "known_hosts_file": "/etc/known_hosts", rclone.SecretsFileOption: "far.secrets"},
		Resolve: func(p string) string {
			if filepath.IsAbs(p) {
				return p
			}
			return filepath.Join(dir, p)
		}}
	cfg, err := rclone.FromSpec(spec, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Label != "far-sftp" || cfg.Backend != "sftp" || cfg.Root != "/srv/custos" {
		t.Errorf("config %+v", cfg)
	}
	if cfg.Secrets["pass"] != "from-env" || cfg.Secrets["key_file_pass"] != "phrase = with equals" || len(cfg.Secrets) != 2 {
		t.Errorf("secrets %v", cfg.Secrets)
	}
	if cfg.Options["host"] != "h" || cfg.Options["key_file"] != filepath.Join(dir, "keys/id") ||
		cfg.Options["known_hosts_file"] != "/etc/known_hosts" || cfg.Options[rclone.SecretsFileOption] != "" {
		t.Errorf("options %v", cfg.Options)
	}
}

func TestFromSpecSecretsFileErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"readable by others", "pass = s3cr3t-value\n", 0o644, "readable by others"},
		{"no equals sign", "s3cr3t-value\n", 0o600, "line 1: want option = value"},
		{"twice", "pass = a-s3cr3t-value\npass = b-s3cr3t-value\n", 0o600, "line 2: pass given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(t.TempDir(), "x.secrets")
			writeSecrets(t, file, tc.content, tc.mode)
			_, err := rclone.FromSpec(registry.Spec{Name: "x", Provider: "sftp", Options: map[string]string{rclone.SecretsFileOption: file}}, func(string) string { return "" })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("FromSpec = %v, want an error holding %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("the error quotes the file: %v", err)
			}
		})
	}
	// A setting in the secrets file is refused when the target is built.
	file := filepath.Join(t.TempDir(), "x.secrets")
	writeSecrets(t, file, "host = h\n", 0o600)
	cfg, err := rclone.FromSpec(registry.Spec{Name: "x", Provider: "local", Options: map[string]string{rclone.SecretsFileOption: file}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rclone.New(t.Context(), cfg); !errors.Is(err, target.ErrPermanent) || !strings.Contains(err.Error(), "secret host is not a secret option") {
		t.Fatalf("New with a setting among the secrets = %v", err)
	}
}

func writeSecrets(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// The runtime configuration opens an rclone target once the package is imported (as the worker
// and the CLI do): settings from the file, the key's passphrase from the environment, wrapped
// with the usual stack.
func TestRuntimeConfiguration(t *testing.T) {
	srv := startSFTP(t)
	cfg := srv.config(t)
	dir := t.TempDir()
	yaml := `
nats: {url: nats://127.0.0.1:4222}
keys: {file: custos.key}
targets:
  - name: offsite-sftp
    kind: rclone
    provider: sftp
    path: ` + cfg.Root + `
    options:
      host: 127.0.0.1
      port: ` + cfg.Options["port"] + `
      user: ` + cfg.Options["user"] + `
      key_file: ` + cfg.Options["key_file"] + `
      known_hosts_file: ` + cfg.Options["known_hosts_file"] + `
      secrets_file: offsite.secrets
classes: {critical: {targets: [offsite-sftp]}}
`
	path := filepath.Join(dir, "custos.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	writeSecrets(t, filepath.Join(dir, "offsite.secrets"), "# nothing secret: the key has no passphrase\n", 0o600)
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := c.OpenTargets(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer ts[0].Close()
	if ts[0].Name() != "rclone:offsite-sftp" || ts[0].Kind() != "rclone" {
		t.Fatalf("target %s of kind %s", ts[0].Name(), ts[0].Kind())
	}
	data := targettest.Data(4, 3000)
	targettest.Put(t, ts[0], "packs/ab/cd", data)
	if got := targettest.Read(t, ts[0], "packs/ab/cd"); !bytes.Equal(got, data) {
		t.Fatal("read back other bytes")
	}
	if _, err := os.Stat(filepath.Join(cfg.Root, "packs/ab/cd")); err != nil {
		t.Fatalf("not on the server's disk: %v", err)
	}

	// A secret among the options is refused when the file is loaded.
	bad := strings.Replace(yaml, "secrets_file: offsite.secrets", "pass: hunter2", 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = config.Load(path)
	if err == nil || !strings.Contains(err.Error(), `targets[0] "offsite-sftp": option pass is a secret`) || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Load with a password in the file = %v", err)
	}
}
