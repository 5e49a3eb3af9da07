package worker

import (
	"errors"
	"fmt"
	"github.com/custos-dev/custos/pkg/erasure"
	"log/slog"
	"os"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/target"
)

// Class says where one data class is written.
type Class struct {
	// Targets are the names of the targets every pack of the class is written to.
	Targets []string
	// MinReplicas is how many of Targets must hold a pack before its events are acknowledged;
	// 0 means all. A target that missed the pack is recorded in the repair queue and caught up
	// by the repairer when it answers again, so one target down never blocks the others.
	MinReplicas int
	// Retain, when non-zero, makes every object of the class immutable for that long after it is
	// written (S3 Object Lock, GCS retention, Azure immutability; see each target's docs).
	Retain time.Duration
	// SnapshotTasks is how many tasks (customer ranges) a snapshot of the class is split into,
	// when its source can split; workers share them. Default 4.
	SnapshotTasks int
}

func (c Class) minReplicas() int {
	if c.MinReplicas <= 0 || c.MinReplicas > len(c.Targets) {
		return len(c.Targets)
	}
	return c.MinReplicas
}

// Config configures a worker. Zero values take the documented defaults.
type Config struct {
	// Consumer is the durable consumer that all workers share. Default "custos-workers".
	Consumer string
	// UpdateConsumer lets this worker rewrite the shared consumers' settings when they differ
	// from its own; without it, such a worker refuses to start (ErrConsumerMismatch).
	UpdateConsumer bool
	// Classes maps data class names to where they are written. Events naming another class are
	// dead-lettered.
	Classes map[string]Class
	// Targets are every target a class may name, keyed by Target.Name().
	Targets []target.Target
	// MaxInFlight bounds events held at once by this worker (received, not yet acknowledged).
	// Default 4096.
	MaxInFlight int
	// MaxInFlightBytes bounds the bytes of the messages held at once (one message is always
	// taken, whatever its size): batches of events (docs/events.md section 13) are up to half a
	// MiB each, so MaxInFlight alone would let a backlog fill memory. Default 64 MiB.
	MaxInFlightBytes int64
	// PackMaxBytes, PackMaxItems and PackMaxDelay bound a pack: it is written when any is reached.
	// Defaults 8 MiB, 4096 items, 50 ms.
	PackMaxBytes int
	PackMaxItems int
	PackMaxDelay time.Duration
	// CommitConcurrency bounds packs being written at once. Default 4.
	CommitConcurrency int
	// AckWait is how long the server waits for an acknowledgement or heartbeat before
	// redelivering. Heartbeats are sent every AckWait/3. Default 30 s.
	AckWait time.Duration
	// MaxDeliver is how many deliveries an event gets before it is dead-lettered. Default 5.
	MaxDeliver int
	// MaxInlineBytes bounds an inline record (default event.DefaultMaxInlineBytes, 256 KiB);
	// MaxEventBytes a whole event, data plus headers (default event.DefaultMaxEventBytes, 1 MiB,
	// the limit docs/events.md documents); MaxRefBytes a record read by reference (default
	// 64 GiB).
	MaxInlineBytes int
	MaxEventBytes  int
	MaxRefBytes    int64
	// MaxRecordBytes bounds one record read from a source for a snapshot (default 64 MiB); a
	// larger one fails its task, visibly, rather than being stored in part.
	MaxRecordBytes int64
	// TaskConcurrency bounds snapshot tasks this worker runs at once (default 2: one task's
	// key-value round trips and end-of-task writes leave a core idle that a second fills);
	// CommitInterval
	// is how often it looks for snapshots whose tasks are all durable but that nobody committed
	// (default 5 s).
	TaskConcurrency int
	CommitInterval  time.Duration
	// SpoolDir holds the ciphertext of large items while they are written. Default os.TempDir().
	SpoolDir string
	// ReplicaGrace is how long a pack write waits for the remaining targets once MinReplicas hold
	// it; the rest are then recorded for repair. Default 2 s.
	ReplicaGrace time.Duration
	// DrainTimeout bounds how long Stop waits for held work before handing it back. Default 30 s.
	DrainTimeout time.Duration
	// Erasure is how deletion requests are authenticated and carried out; ErasureInterval is
	// how often the worker looks for requests whose grace period ended (default 30 s).
	Erasure         erasure.Policy
	ErasureInterval time.Duration
	// AuditCommitInterval is how often the worker appends its backup_commit summaries, one per
	// class that committed packs in the interval (default 1 min; docs/audit.md). Stop appends
	// the last ones.
	AuditCommitInterval time.Duration
	// AuditCheckpointInterval is how often the worker signs a checkpoint of the audit log and
	// writes it with the entries to every target, taking turns with the other workers
	// (docs/audit.md). Unlike the other fields, 0 means off: config.Worker gives the 1 h default.
	AuditCheckpointInterval time.Duration
	// Drill enables restore drills (drill.go).
	Drill DrillConfig
	// Logger and Clock are injected so tests can read logs and fake time.
	Logger *slog.Logger
	Clock  func() time.Time
	// TracerProvider defaults to the global provider.
	TracerProvider trace.TracerProvider
	// MeterProvider receives the custos.alerts counter; it defaults to the global provider.
	MeterProvider metric.MeterProvider

	// Test hooks simulate a crash at a step of the commit (the error aborts the commit there).
	testAfterIntent func(packID string) error
	testAfterIndex  func(packID string) error
	// testBeforeTaskDone runs after a task's manifest is written, before its result is recorded.
	testBeforeTaskDone func(job string, task int) error
	// testMaxCachedShards, when positive, replaces maxCachedShards.
	testMaxCachedShards int
	// testMaxCachedEntries, when positive, replaces maxCachedEntries.
	testMaxCachedEntries int
}

func (c *Config) setDefaults() error {
	if c.Consumer == "" {
		c.Consumer = "custos-workers"
	}
	if c.MaxInFlightBytes <= 0 {
		c.MaxInFlightBytes = 64 << 20
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 4096
	}
	if c.PackMaxBytes <= 0 {
		c.PackMaxBytes = 8 << 20
	}
	if c.PackMaxItems <= 0 {
		c.PackMaxItems = 4096
	}
	if c.PackMaxDelay <= 0 {
		c.PackMaxDelay = 50 * time.Millisecond
	}
	if c.CommitConcurrency <= 0 {
		c.CommitConcurrency = 4
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.AuditCommitInterval <= 0 {
		c.AuditCommitInterval = time.Minute
	}
	if c.AuditCheckpointInterval < 0 {
		c.AuditCheckpointInterval = 0
	}
	if c.ErasureInterval <= 0 {
		c.ErasureInterval = 30 * time.Second
	}
	if err := c.Erasure.Validate(); err != nil {
		return err
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if c.MaxInlineBytes <= 0 {
		c.MaxInlineBytes = event.DefaultMaxInlineBytes
	}
	if c.MaxEventBytes <= 0 {
		c.MaxEventBytes = event.DefaultMaxEventBytes
	}
	if c.MaxRefBytes <= 0 {
		c.MaxRefBytes = 64 << 30
	}
	if c.MaxRecordBytes <= 0 {
		c.MaxRecordBytes = 64 << 20
	}
	if c.TaskConcurrency <= 0 {
		c.TaskConcurrency = 2
	}
	if c.CommitInterval <= 0 {
		c.CommitInterval = 5 * time.Second
	}
	if c.SpoolDir == "" {
		c.SpoolDir = os.TempDir()
	}
	if c.ReplicaGrace <= 0 {
		c.ReplicaGrace = 2 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if len(c.Classes) == 0 {
		return errors.New("worker: no data classes configured")
	}
	names := map[string]bool{}
	for _, t := range c.Targets {
		names[t.Name()] = true
	}
	for class, cl := range c.Classes {
		if len(cl.Targets) == 0 {
			return fmt.Errorf("worker: class %q has no targets", class)
		}
		if cl.SnapshotTasks <= 0 {
			cl.SnapshotTasks = 4
			c.Classes[class] = cl
		}
		if cl.MinReplicas < 0 || cl.MinReplicas > len(cl.Targets) {
			return fmt.Errorf("worker: class %q: min replicas %d is not between 1 and its %d targets", class, cl.MinReplicas, len(cl.Targets))
		}
		for _, n := range cl.Targets {
			if !names[n] {
				return fmt.Errorf("worker: class %q names unknown target %q", class, n)
			}
		}
	}
	return nil
}
