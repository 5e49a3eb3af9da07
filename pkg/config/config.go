// Package config loads the runtime configuration shared by the worker and the admin CLI, and
// builds the storage targets (the one place where target wrappers are composed) and the data
// sources from it.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/custos-dev/custos/pkg/erasure"
	"github.com/custos-dev/custos/pkg/policy"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the runtime configuration file (YAML).
type Config struct {
	// PolicyFile is the policy file (relative to this file) that defines the data classes:
	// targets, replicas, immutability, retention, schedules, RPO and RTO. With it, classes here
	// say only how a class is wired (source, snapshot_tasks); see policy.go. Empty: the classes
	// are taken from this file as written, unchecked (the built-in policy still gives schedules,
	// RPO and RTO).
	PolicyFile string           `yaml:"policy"`
	NATS       NATS             `yaml:"nats"`
	Keys       Keys             `yaml:"keys"`
	Targets    []Target         `yaml:"targets"`
	Sources    []Source         `yaml:"sources"`
	Classes    map[string]Class `yaml:"classes"`
	Worker     Worker           `yaml:"worker"`
	Telemetry  Telemetry        `yaml:"telemetry"`
	Alerts     Alerts           `yaml:"alerts"` // telemetry.go
	// Erasure says how deletion requests are authenticated and carried out.
	Erasure erasure.Policy `yaml:"erasure"`
	dir     string
	policy  *policy.Policy
}

// NATS says where the broker is.
type NATS struct {
	URL string `yaml:"url"`
	// CredsFile is a NATS credentials file (JWT and seed, for operator-mode servers); empty
	// for none.
	CredsFile string `yaml:"creds_file"`
	// SeedFile is an NKey seed file written by `custos auth generate` (one per role, see
	// deploy/nats/README.md); empty for none. The role it names also sets the reply inbox
	// the role may read.
	SeedFile string `yaml:"seed_file"`
}

// Keys says where the key-encryption key lives.
type Keys struct {
	// File is the local key file. With backend "file" (the embedded default) it holds the KEK
	// versions and the pseudonym key; with another backend, the pseudonym key only. Relative
	// paths are relative to the configuration file.
	File string `yaml:"file"`
	// Create makes the key file (and, with another backend, the first KEK version) on first use
	// (dev stack only).
	Create bool `yaml:"create"`
	// Backend holds the KEK: "file" (default), "pkcs11" or "aws_kms" (docs/kms-*.md).
	Backend string `yaml:"backend"`
	// PKCS11 configures the pkcs11 backend; the PIN comes from the file PINFile or the
	// environment variable CUSTOS_PKCS11_PIN, never from this file.
	PKCS11 struct {
		Module      string `yaml:"module"`
		TokenLabel  string `yaml:"token_label"`
		PINFile     string `yaml:"pin_file"`
		LabelPrefix string `yaml:"label_prefix"`
	} `yaml:"pkcs11"`
	// AWSKMS configures the aws_kms backend; credentials come from the SDK's standard chain.
	AWSKMS struct {
		Endpoint string `yaml:"endpoint"`
		Region   string `yaml:"region"`
		Alias    string `yaml:"alias"`
	} `yaml:"aws_kms"`
}

// Target is one storage target.
//
// Credentials are never part of this file: each cloud target takes them from its SDK's standard
// chain (environment, shared files, workload identity); see docs/targets/.
type Target struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"` // fs, s3, gcs or azure
	Path string `yaml:"path"` // fs: root directory
	// Cloud targets: where objects go.
	Provider  string `yaml:"provider"`   // s3: profile (aws, wasabi, b2, ibm, idrive, minio, r2, generic)
	Endpoint  string `yaml:"endpoint"`   // s3, gcs, azure: service URL (empty: the provider's default)
	Region    string `yaml:"region"`     // s3
	Account   string `yaml:"account"`    // s3: fills {account} in the profile's endpoint (R2)
	Bucket    string `yaml:"bucket"`     // s3, gcs
	Container string `yaml:"container"`  // azure
	Prefix    string `yaml:"prefix"`     // s3, gcs, azure: prepended to every object name
	PathStyle bool   `yaml:"path_style"` // s3: path-style addressing
	LockMode  string `yaml:"lock_mode"`  // s3: GOVERNANCE or COMPLIANCE for retained objects
	// Options are the settings of a kind registered outside pkg (rclone: the backend's options);
	// never secrets. See registry.go.
	Options Options `yaml:"options"`
	// Concurrency bounds operations in flight on this target. Default 16.
	Concurrency int `yaml:"concurrency"`
	// Attempts bounds tries per operation (retry with backoff and jitter). Default 5.
	Attempts int `yaml:"attempts"`
}

// Class names the targets a data class is written to.
type Class struct {
	Targets []string `yaml:"targets"`
	// MinReplicas is how many targets must hold a pack before its events are acknowledged;
	// 0 means all. The others are caught up by the repairer.
	MinReplicas int `yaml:"min_replicas"`
	// Retain makes the class's objects immutable for this long (0: not locked).
	Retain time.Duration `yaml:"retain"`
	// Source names the source that scheduled snapshots read the class from; that source must
	// configure the class. Empty: the class only receives records carried by events.
	Source string `yaml:"source"`
	// SnapshotTasks is how many tasks a full snapshot of the class is split into, by customer
	// range, for workers to share. Default 4.
	SnapshotTasks int `yaml:"snapshot_tasks"`
}

// Worker tunes the worker; zero values take the worker's defaults.
type Worker struct {
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxInFlightBytes bounds the bytes of the messages a worker holds at once.
	MaxInFlightBytes int64         `yaml:"max_in_flight_bytes"`
	PackMaxBytes     int           `yaml:"pack_max_bytes"`
	PackMaxItems     int           `yaml:"pack_max_items"`
	PackMaxDelay     time.Duration `yaml:"pack_max_delay"`
	AckWait          time.Duration `yaml:"ack_wait"`
	MaxDeliver       int           `yaml:"max_deliver"`
	MaxInlineBytes   int           `yaml:"max_inline_bytes"`
	SpoolDir         string        `yaml:"spool_dir"`
	DrainTimeout     time.Duration `yaml:"drain_timeout"`
	// ReplicaGrace is how long a pack write waits for the remaining targets once min_replicas
	// hold it; RepairInterval is how often the repairer looks for missing replicas.
	ReplicaGrace   time.Duration `yaml:"replica_grace"`
	RepairInterval time.Duration `yaml:"repair_interval"`
	// UpdateConsumer lets this worker rewrite the shared consumers' settings (ack_wait...) when
	// they differ from its own; without it such a worker refuses to start, so that the last
	// worker to start never changes the whole fleet's settings by accident.
	UpdateConsumer bool `yaml:"update_consumer"`
	// Snapshots from sources: the largest record read (bytes), tasks run at once by one worker,
	// and how often to look for snapshots whose tasks are all durable but not committed.
	MaxRecordBytes  int64         `yaml:"max_record_bytes"`
	TaskConcurrency int           `yaml:"task_concurrency"`
	CommitInterval  time.Duration `yaml:"commit_interval"`
	// ScrubInterval is how often the worker's scrub downloads a slice of the packs, checks them
	// as custos verify --read-data does, and repairs what it finds (docs/design.md section 11);
	// ScrubRate bounds what it reads, in bytes per second. Unset: every DefaultScrubInterval at
	// DefaultScrubRate; 0s turns the scrub off. See ScrubEvery and ScrubBytesPerSecond.
	ScrubInterval *time.Duration `yaml:"scrub_interval"`
	ScrubRate     int64          `yaml:"scrub_rate"`
	// ErasureInterval is how often the worker looks for erasures whose grace period ended
	// (default 30s; see the erasure section).
	ErasureInterval time.Duration `yaml:"erasure_interval"`
	// AuditCheckpointInterval is how often one worker signs a checkpoint of the audit log and
	// writes it, with the entries, to every target (docs/audit.md). Unset: every
	// DefaultAuditCheckpointInterval; 0s turns it off. See AuditCheckpointEvery.
	AuditCheckpointInterval *time.Duration `yaml:"audit_checkpoint_interval"`
	// AuditCommitInterval is how often each worker appends its backup_commit summaries to the
	// audit log (default 1m).
	AuditCommitInterval time.Duration `yaml:"audit_commit_interval"`
}

// DefaultAuditCheckpointInterval is how often the workers checkpoint the audit log by default.
const DefaultAuditCheckpointInterval = time.Hour

// AuditCheckpointEvery is the audit checkpoint interval: DefaultAuditCheckpointInterval when
// unset, 0 (off) when set to zero or less.
func (w Worker) AuditCheckpointEvery() time.Duration {
	if w.AuditCheckpointInterval == nil {
		return DefaultAuditCheckpointInterval
	}
	return max(*w.AuditCheckpointInterval, 0)
}

// Scrub defaults.
const (
	DefaultScrubInterval = time.Hour
	DefaultScrubRate     = 8 << 20 // bytes per second
)

// ScrubEvery is the scrub's interval: DefaultScrubInterval when unset, 0 (off) when set to zero
// or less.
func (w Worker) ScrubEvery() time.Duration {
	if w.ScrubInterval == nil {
		return DefaultScrubInterval
	}
	return max(*w.ScrubInterval, 0)
}

// ScrubBytesPerSecond is the scrub's read rate: ScrubRate, or DefaultScrubRate when unset.
func (w Worker) ScrubBytesPerSecond() int64 {
	if w.ScrubRate <= 0 {
		return DefaultScrubRate
	}
	return w.ScrubRate
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
	if err := c.loadPolicy(); err != nil {
		return nil, fmt.Errorf("config %s: policy: %w", path, err)
	}
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
	switch c.Keys.Backend {
	case "", "file", "pkcs11", "aws_kms":
	default:
		errs = append(errs, fmt.Errorf("keys.backend %q: want file, pkcs11 or aws_kms", c.Keys.Backend))
	}
	if err := c.Erasure.Validate(); err != nil {
		errs = append(errs, err)
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
		case "s3", "gcs":
			if t.Bucket == "" {
				errs = append(errs, fmt.Errorf("targets[%d] %q: bucket is required for kind %s", i, t.Name, t.Kind))
			}
		case "azure":
			if t.Endpoint == "" || t.Container == "" {
				errs = append(errs, fmt.Errorf("targets[%d] %q: endpoint (account URL) and container are required for kind azure", i, t.Name))
			}
		default:
			if err := c.validateKind(t); err != nil {
				errs = append(errs, fmt.Errorf("targets[%d] %q: %w", i, t.Name, err))
			}
		}
	}
	errs = append(errs, c.validateTelemetry()...) // telemetry.go
	sources, serrs := c.validateSources()
	errs = append(errs, serrs...)
	if len(c.Classes) == 0 {
		errs = append(errs, errors.New("classes: at least one data class is required"))
	}
	for name, cl := range c.Classes {
		if len(cl.Targets) == 0 {
			errs = append(errs, fmt.Errorf("classes.%s: no targets", name))
		}
		if cl.MinReplicas < 0 || cl.MinReplicas > len(cl.Targets) {
			errs = append(errs, fmt.Errorf("classes.%s: min_replicas %d is not between 1 and its %d targets", name, cl.MinReplicas, len(cl.Targets)))
		}
		if cl.Retain < 0 {
			errs = append(errs, fmt.Errorf("classes.%s: retain must not be negative", name))
		}
		for _, t := range cl.Targets {
			if !names[t] {
				errs = append(errs, fmt.Errorf("classes.%s: unknown target %q", name, t))
			}
		}
		if cl.Source != "" {
			if s, ok := sources[cl.Source]; !ok {
				errs = append(errs, fmt.Errorf("classes.%s: unknown source %q", name, cl.Source))
			} else if _, ok := s.Classes[name]; !ok {
				errs = append(errs, fmt.Errorf("classes.%s: source %q has no class %q", name, cl.Source, name))
			}
		}
		if cl.SnapshotTasks < 0 {
			errs = append(errs, fmt.Errorf("classes.%s: snapshot_tasks must not be negative", name))
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
