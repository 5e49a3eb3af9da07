package rclone

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	rfs "github.com/rclone/rclone/fs"
	"github.com/rclone/rclone/fs/config/configmap"
	"github.com/rclone/rclone/fs/config/obscure"
	"github.com/rclone/rclone/fs/fspath"

	"github.com/custos-dev/custos/pkg/target/registry"
)

// Config says how to reach one remote. It is what New takes; the runtime configuration fills it
// through FromSpec.
type Config struct {
	// Label names the target: Name() is "rclone:<Label>". Required.
	Label string
	// Backend is one of Backends(): sftp, webdav, dropbox, box, drive, pcloud, b2, or local
	// (for tests; a local disk is better served by the fs target).
	Backend string
	// Root is the directory on the remote that holds the objects (for sftp relative to the
	// login directory unless it starts with "/"; for b2 "bucket/path").
	Root string
	// Options are the backend's settings, named as rclone names them (host, user, url, ...).
	// They must not hold secrets: New refuses an option that IsSecret reports.
	Options map[string]string
	// Secrets are the backend's secret settings in plain text (pass, token, key, ...). Custos
	// never logs them and keeps them out of every error it returns.
	Secrets map[string]string
}

// Kind is the kind every target of this package reports and the runtime configuration names.
const Kind = "rclone"

// SecretsFileOption is the option of the runtime configuration that names a file of secrets; it
// is Custos's own, not the backend's.
const SecretsFileOption = "secrets_file"

// EnvPrefix starts the environment variables that carry secrets: CUSTOS_TARGET_<LABEL>_<OPTION>,
// upper case, every character other than a letter or digit turned into "_"
// (CUSTOS_TARGET_OFFSITE_SFTP_PASS for the option pass of target offsite-sftp).
const EnvPrefix = "CUSTOS_TARGET_"

// backend is what Custos knows of one rclone backend.
type backend struct {
	// defaults are settings Custos applies unless the configuration sets them.
	defaults map[string]string
	// refused are options Custos does not accept, with the reason.
	refused map[string]string
	// check, if set, validates the options beyond what is generic.
	check func(opts map[string]string) error
	// linkPublish says the backend can publish a staged object with a server-side hard link
	// that fails when the name exists (sftp with copy_is_hardlink).
	linkPublish bool
}

var backends = map[string]backend{
	"sftp": {
		// Hard links publish create-only; sha256sum on the server verifies what was stored.
		// The command is named because rclone's own probe for it does not find it.
		defaults: map[string]string{"copy_is_hardlink": "true", "hashes": "sha256", "sha256sum_command": "sha256sum"},
		refused: map[string]string{
			"pin_host_key": "trust on first use would accept any server once; give known_hosts_file or host_keys",
			"ask_password": "a worker cannot answer a prompt; give pass or a key in the secrets",
		},
		check: func(o map[string]string) error {
			if (o["known_hosts_file"] == "" || o["known_hosts_file"] == "none") && o["host_keys"] == "" {
				return errors.New("sftp needs the server's host key checked: set options.known_hosts_file (an OpenSSH known_hosts file) or options.host_keys")
			}
			return nil
		},
		linkPublish: true,
	},
	"webdav":  {},
	"dropbox": {},
	"box":     {},
	"drive":   {},
	"pcloud":  {},
	"b2":      {},
	"local":   {},
}

// Backends returns the backends this package supports, sorted.
func Backends() []string {
	out := make([]string, 0, len(backends))
	for b := range backends {
		out = append(out, b)
	}
	slices.Sort(out)
	return out
}

// credentialOptions are options that rclone marks sensitive and that are credentials (rclone
// also marks host names, user names and folder IDs sensitive; those are settings here).
var credentialOptions = map[string]bool{
	"key_pem": true, "bearer_token": true, "client_secret": true, "token": true, "access_token": true,
	"config_credentials": true, "service_account_credentials": true, "key": true,
	"sse_customer_key": true, "sse_customer_key_base64": true,
}

// pathOptions are options that name a local file; relative paths in the runtime configuration
// are taken relative to the configuration file.
var pathOptions = []string{"key_file", "pubkey_file", "known_hosts_file", "service_account_file", "box_config_file"}

// IsSecret reports whether option of backend is a secret: a password rclone stores obscured, or
// a credential. Secrets come from the environment or a secrets file, never from the
// configuration.
func IsSecret(backendName, option string) bool {
	ri, err := rfs.Find(backendName)
	if err != nil {
		return false
	}
	o := ri.Options.Get(option)
	return o != nil && (o.IsPassword || credentialOptions[option])
}

// check validates cfg without reaching the remote. Errors never quote a secret.
func (cfg Config) check() (*rfs.RegInfo, backend, error) {
	var errs []error
	if cfg.Label == "" {
		errs = append(errs, errors.New("a label is required"))
	} else if err := fspath.CheckConfigName(cfg.Label); err != nil {
		errs = append(errs, fmt.Errorf("label %q: use letters, digits, '-', '_' and '.'", cfg.Label))
	}
	b, ok := backends[cfg.Backend]
	if !ok {
		return nil, b, errors.Join(append(errs, fmt.Errorf("backend %q is not supported (supported: %s)", cfg.Backend, strings.Join(Backends(), ", ")))...)
	}
	ri, err := rfs.Find(cfg.Backend)
	if err != nil { // every supported backend is imported: a build mistake
		return nil, b, fmt.Errorf("backend %s is not linked: %w", cfg.Backend, err)
	}
	for _, k := range slices.Sorted(maps.Keys(cfg.Options)) {
		switch o := ri.Options.Get(k); {
		case o == nil:
			errs = append(errs, fmt.Errorf("option %s is not an option of the %s backend", k, cfg.Backend))
		case IsSecret(cfg.Backend, k):
			errs = append(errs, fmt.Errorf("option %s is a secret: set it in the environment (%s<LABEL>_%s) or the secrets file, never in the configuration",
				k, EnvPrefix, envName(k)))
		case b.refused[k] != "":
			errs = append(errs, fmt.Errorf("option %s is not accepted: %s", k, b.refused[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(cfg.Secrets)) {
		if o := ri.Options.Get(k); o == nil || !IsSecret(cfg.Backend, k) {
			errs = append(errs, fmt.Errorf("secret %s is not a secret option of the %s backend (settings go in the configuration's options)", k, cfg.Backend))
		}
	}
	for _, o := range ri.Options {
		if o.Required && o.String() == "" && cfg.Options[o.Name] == "" && !IsSecret(cfg.Backend, o.Name) {
			errs = append(errs, fmt.Errorf("option %s is required by the %s backend", o.Name, cfg.Backend))
		}
	}
	if b.check != nil {
		if err := b.check(cfg.Options); err != nil {
			errs = append(errs, err)
		}
	}
	return ri, b, errors.Join(errs...)
}

// configMap builds what rclone's backend reads its settings from: the backend's defaults,
// Custos's defaults, the options and the secrets (passwords obscured as rclone expects them).
// Settings a backend saves (a refreshed OAuth token) are kept in memory for this target.
func (cfg Config) configMap(ri *rfs.RegInfo, b backend) (*configmap.Map, configmap.Simple, error) {
	values := configmap.Simple{}
	for k, v := range b.defaults {
		values[k] = v
	}
	for k, v := range cfg.Options {
		values[k] = v
	}
	for k, v := range cfg.Secrets {
		if o := ri.Options.Get(k); o != nil && o.IsPassword {
			ob, err := obscure.Obscure(v)
			if err != nil {
				return nil, nil, fmt.Errorf("secret %s: cannot be passed on", k)
			}
			v = ob
		}
		values[k] = v
	}
	m := configmap.New()
	m.AddGetter(values, configmap.PriorityNormal)
	m.AddGetter(defaultsGetter(ri.Options), configmap.PriorityDefault)
	m.AddSetter(values)
	return m, values, nil
}

// defaultsGetter answers with an option's default, as rclone's own configuration does.
type defaultsGetter rfs.Options

func (d defaultsGetter) Get(key string) (string, bool) {
	o := rfs.Options(d).Get(key)
	if o == nil {
		return "", false
	}
	return o.String(), true
}

// FromSpec turns a target of the runtime configuration into a Config. Secrets are read from the
// environment (getenv, os.Getenv when nil) and from the file that options.secrets_file names
// (relative to the configuration file); the environment wins. Each line of that file is
// "option = value"; blank lines and lines starting with # are skipped. Only secret options may
// appear in either.
func FromSpec(s registry.Spec, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg := Config{Label: s.Name, Backend: s.Provider, Root: s.Path, Options: map[string]string{}, Secrets: map[string]string{}}
	var file string
	for k, v := range s.Options {
		switch {
		case k == SecretsFileOption:
			file = s.ResolvePath(v)
		case slices.Contains(pathOptions, k) && v != "none" && !strings.HasPrefix(v, "~") && !strings.HasPrefix(v, "$"):
			cfg.Options[k] = s.ResolvePath(v)
		default:
			cfg.Options[k] = v
		}
	}
	if file != "" {
		secrets, err := readSecrets(file)
		if err != nil {
			return cfg, err
		}
		cfg.Secrets = secrets
	}
	if ri, err := rfs.Find(s.Provider); err == nil {
		for _, o := range ri.Options {
			if !IsSecret(s.Provider, o.Name) {
				continue
			}
			if v := getenv(EnvPrefix + envName(s.Name) + "_" + envName(o.Name)); v != "" {
				cfg.Secrets[o.Name] = v
			}
		}
	}
	return cfg, nil
}

// readSecrets reads a secrets file. Errors name the file and line, never a value.
func readSecrets(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secrets file %s: readable by others (mode %v): chmod 600", filepath.Base(path), fi.Mode().Perm())
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20) // OAuth tokens and service account keys are long
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("secrets file %s line %d: want option = value", filepath.Base(path), n)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("secrets file %s line %d: %s given twice", filepath.Base(path), n, k)
		}
		out[k] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("secrets file %s: %w", filepath.Base(path), err)
	}
	return out, nil
}

// envName turns a label or option name into the part of an environment variable name.
func envName(s string) string {
	b := []byte(strings.ToUpper(s))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			b[i] = '_'
		}
	}
	return string(b)
}
