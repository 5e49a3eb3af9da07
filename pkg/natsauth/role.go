// Package natsauth holds who may do what on the Custos broker: one NATS user per role, each
// with the subject permissions of exactly what the role's code does, and the files that give
// them to nats-server and to the clients.
//
// The roles are the parts of Custos (producer, worker, scheduler) and the people using the CLI
// (admin, operator, restorer, auditor). Only the admin may create, change, purge or delete a
// stream or bucket; every other role binds to what the admin provisioned (package broker) and
// touches only its own subjects. Each non-admin role gets its own reply-inbox prefix
// (InboxPrefix), so no role can read the replies another receives.
package natsauth

import (
	"fmt"

	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/schedule"
)

// Role is what a credential is for.
type Role string

// The roles. The CLI commands map to them as deploy/nats/README.md shows.
const (
	// Producer: an application publishing trigger events and uploading large records.
	Producer Role = "producer"
	// Worker: the workers, sharing the event and task consumers.
	Worker Role = "worker"
	// Scheduler: publishes schedule ticks and compliance deadlines, and watches RPOs.
	Scheduler Role = "scheduler"
	// Admin may do everything, including creating, changing, purging and deleting streams
	// (custos setup) and rotating keys.
	Admin Role = "admin"
	// Operator runs the day to day: jobs, dead letters, verify with repair, retention,
	// backup and erasure requests, catalog rebuilds.
	Operator Role = "operator"
	// Restorer reads the index, the key store and the snapshot list to restore.
	Restorer Role = "restorer"
	// Auditor reads the audit log, RPOs and verifies without repairing.
	Auditor Role = "auditor"
)

// Roles lists every role, in the order Generate writes them.
var Roles = []Role{Producer, Worker, Scheduler, Admin, Operator, Restorer, Auditor}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool {
	for _, x := range Roles {
		if r == x {
			return true
		}
	}
	return false
}

// InboxPrefix is the reply-inbox prefix clients of role r must use (nats.CustomInboxPrefix;
// ConnectOption sets it): a role may subscribe only under its own prefix.
func InboxPrefix(r Role) string { return "_INBOX.custos." + string(r) }

// DefaultUploadBucket is the object store large records are uploaded to (`custos backup now
// --file`, and producers sending records by reference).
const DefaultUploadBucket = "CUSTOS_UPLOADS"

// DefaultWorkerConsumer is the durable consumer the workers share by default
// (worker.Config.Consumer).
const DefaultWorkerConsumer = "custos-workers"

// Options say what the permissions are about. The zero value gives the defaults.
type Options struct {
	// ReserveDeletion takes deletion requests away from producers: only the operator and the
	// admin may then publish custos.v1.events.deletion_request.
	ReserveDeletion bool
	// WorkerConsumer is the durable consumer of CUSTOS_EVENTS the workers share; default
	// DefaultWorkerConsumer.
	WorkerConsumer string
	// UploadBuckets are the object stores producers and the operator upload to and workers
	// read from; nil means DefaultUploadBucket. An empty, non-nil list allows none, and then a
	// producer may make no JetStream API request at all.
	UploadBuckets []string
	// SchedulerBucket is the scheduler's record bucket; default schedule.DefaultBucket.
	SchedulerBucket string
	// KeysBucket is the key store's bucket; default keys.DefaultBucket.
	KeysBucket string
}

func (o Options) withDefaults() Options {
	if o.WorkerConsumer == "" {
		o.WorkerConsumer = DefaultWorkerConsumer
	}
	if o.UploadBuckets == nil {
		o.UploadBuckets = []string{DefaultUploadBucket}
	}
	if o.SchedulerBucket == "" {
		o.SchedulerBucket = schedule.DefaultBucket
	}
	if o.KeysBucket == "" {
		o.KeysBucket = keys.DefaultBucket
	}
	return o
}

func (r Role) String() string { return string(r) }

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	if r := Role(s); r.Valid() {
		return r, nil
	}
	return "", fmt.Errorf("natsauth: unknown role %q", s)
}
