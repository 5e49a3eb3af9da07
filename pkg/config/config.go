// Package config loads the runtime configuration shared by the worker and the admin CLI, and
// builds the storage targets from it: the one place where target wrappers are composed.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the runtime configuration file (YAML).
type Config struct {
	NATS      NATS             `yaml:"nats"`
	Keys      Keys             `yaml:"keys"`
	Targets   []Target         `yaml:"targets"`
	Classes   map[string]Class `yaml:"classes"`
	Worker    Worker           `yaml:"worker"`
	Telemetry Telemetry        `yaml:"telemetry"`
	dir       string
}

// NATS says where the broker is.
type NATS struct {
	URL string `yaml:"url"`
	// CredsFile is a NATS credentials file; empty for none.
	CredsFile string `yaml:"creds_file"`
}

// Keys says where the key-encryption key lives.
type Keys struct {
	// File is the local key file of the embedded default KMS. Relative paths are relative to the
	// configuration file.
	File string `yaml:"file"`
	// Create makes the key file on first use (dev stack only).
	Create bool `yaml:"create"`
}

// Target is one storage target.
type Target struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"` // fs
	Path string `yaml:"path"` // fs: root directory
	// Concurrency bounds operations in flight on this target. Default 16.
	Concurrency int `yaml:"concurrency"`
	// Attempts bounds tries per operation (retry with backoff and jitter). Default 5.
	Attempts int `yaml:"attempts"`
}

// Class names the targets a data class is written to.
type Class struct {
	Targets []string `yaml:"targets"`
}

// Worker tunes the worker; zero values take the worker's defaults.
type Worker struct {
	MaxInFlight    int           `yaml:"max_in_flight"`
	PackMaxBytes   int           `yaml:"pack_max_bytes"`
	PackMaxItems   int           `yaml:"pack_max_items"`
	PackMaxDelay   time.Duration `yaml:"pack_max_delay"`
	AckWait        time.Duration `yaml:"ack_wait"`
	MaxDeliver     int           `yaml:"max_deliver"`
	MaxInlineBytes int           `yaml:"max_inline_bytes"`
	SpoolDir       string        `yaml:"spool_dir"`
	DrainTimeout   time.Duration `yaml:"drain_timeout"`
}

// Telemetry selects the trace exporter: otlp-grpc, otlp-http, stdout or none.
type Telemetry struct {
	Exporter string `yaml:"exporter"`
	Endpoint string `yaml:"endpoint"`
}

// Load reads and validates a configuration file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) { // an empty file is validated below
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.dir = filepath.Dir(path)
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

// Validate checks references between sections.
func (c *Config) Validate() error {
	var errs []error
	if c.NATS.URL == "" {
		errs = append(errs, errors.New("nats.url is required"))
	}
	if c.Keys.File == "" {
		errs = append(errs, errors.New("keys.file is required"))
	}
	names := map[string]bool{}
	for i, t := range c.Targets {
		switch {
		case t.Name == "":
			errs = append(errs, fmt.Errorf("targets[%d]: name is required", i))
		case names[t.Name]:
			errs = append(errs, fmt.Errorf("targets[%d]: duplicate name %q", i, t.Name))
		}
		names[t.Name] = true
		switch t.Kind {
		case "fs":
			if t.Path == "" {
				errs = append(errs, fmt.Errorf("targets[%d] %q: path is required for kind fs", i, t.Name))
			}
		default:
			errs = append(errs, fmt.Errorf("targets[%d] %q: unknown kind %q (supported: fs)", i, t.Name, t.Kind))
		}
	}
	if len(c.Classes) == 0 {
		errs = append(errs, errors.New("classes: at least one data class is required"))
	}
	for name, cl := range c.Classes {
		if len(cl.Targets) == 0 {
			errs = append(errs, fmt.Errorf("classes.%s: no targets", name))
		}
		for _, t := range cl.Targets {
			if !names[t] {
				errs = append(errs, fmt.Errorf("classes.%s: unknown target %q", name, t))
			}
		}
	}
	return errors.Join(errs...)
}

// Path resolves a path written in the configuration relative to the file's directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}
