package natsauth

import (
	"slices"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/custos-dev/custos/pkg/erasure"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/worker"
)

// api is the subject of a JetStream API request.
func api(s string) string { return "$JS.API." + s }

// neverDeny is what no role but the admin may ever do: change the shape of the broker
// (create, update, delete, purge streams; delete single messages; snapshot or restore a
// stream; move its peers or leader), manage the account or the server, or use the legacy
// durable endpoint that bypasses the consumer checks below.
var neverDeny = []string{
	api("STREAM.CREATE.>"), api("STREAM.UPDATE.>"), api("STREAM.DELETE.>"), api("STREAM.PURGE.>"),
	api("STREAM.MSG.DELETE.>"), api("STREAM.SNAPSHOT.>"), api("STREAM.RESTORE.>"),
	api("STREAM.PEER.>"), api("STREAM.LEADER.>"),
	api("CONSUMER.DURABLE.>"), api("CONSUMER.LEADER.>"), api("CONSUMER.PAUSE.>"),
	api("CONSUMER.UNPIN.>"), api("CONSUMER.RESET.>"),
	api("ACCOUNT.>"), api("META.>"), api("SERVER.>"),
	"$SYS.>",
}

// subscribeDeny keeps every non-admin role from reading Custos traffic with plain
// subscriptions: events, dead letters, audit entries, key-value and object writes, and the
// JetStream API requests of others. Clients receive what they may read through their inbox.
var subscribeDeny = []string{"custos.>", "$KV.>", "$O.>", "$JS.>", "$SYS.>"}

// perms collects one role's subjects.
type perms struct {
	pubAllow, pubDeny, subAllow, subDeny []string
}

func (p *perms) allow(s ...string) { p.pubAllow = append(p.pubAllow, s...) }
func (p *perms) deny(s ...string)  { p.pubDeny = append(p.pubDeny, s...) }

// bind allows looking streams up (STREAM.INFO), which broker.Ensure needs.
func (p *perms) bind(streams ...string) {
	for _, s := range streams {
		p.allow(api("STREAM.INFO." + s))
	}
}

// read allows reading single messages of a stream, by sequence or last by subject, in both
// forms nats.go uses (STREAM.MSG.GET, and DIRECT.GET when the stream allows direct gets).
func (p *perms) read(stream string) {
	p.bind(stream)
	p.allow(api("STREAM.MSG.GET."+stream), api("DIRECT.GET."+stream), api("DIRECT.GET."+stream+".>"))
}

// follow allows ordered consumers of a stream: the ephemeral consumers nats.go creates to
// watch or list a bucket, read an object or follow a stream. They have generated names, and
// the client deletes them when it stops (without that right, every stop would wait for a
// timeout); so a role that may follow a stream may also delete consumers of it. That is why
// no role but the workers may follow CUSTOS_EVENTS or CUSTOS_TASKS, whose durable consumers
// the workers share.
func (p *perms) follow(stream string) {
	p.read(stream)
	p.allow(api("CONSUMER.CREATE."+stream), api("CONSUMER.CREATE."+stream+".>"),
		api("CONSUMER.INFO."+stream+".*"), api("CONSUMER.MSG.NEXT."+stream+".*"),
		api("CONSUMER.DELETE."+stream+".*"),
		// flow control replies of push consumers (key watchers): v1 and v2 subject formats
		"$JS.FC."+stream+".>", "$JS.FC.*.*."+stream+".>")
}

// kvRead allows binding to, reading, listing and watching a key-value bucket.
func (p *perms) kvRead(bucket string) { p.follow(broker.KVStream(bucket)) }

// kvWrite allows kvRead and writing, deleting and purging keys of the bucket (never purging
// the bucket's stream).
func (p *perms) kvWrite(bucket string) {
	p.kvRead(bucket)
	p.allow("$KV." + bucket + ".>")
}

// objectRead allows reading objects of an object store.
func (p *perms) objectRead(bucket string) { p.follow(broker.ObjectStream(bucket)) }

// objectWrite allows uploading objects under new names. Replacing or deleting an object
// purges its chunks, which only the admin may.
func (p *perms) objectWrite(bucket string) {
	p.read(broker.ObjectStream(bucket))
	p.allow("$O." + bucket + ".>")
}

// durable allows creating, joining and consuming the durable consumer of stream, and
// acknowledging its messages (v1 and v2 acknowledgement subjects). Updating its settings uses
// the same subject as creating it.
func (p *perms) durable(stream, consumer string) {
	p.bind(stream)
	p.allow(api("CONSUMER.CREATE."+stream+"."+consumer), api("CONSUMER.CREATE."+stream+"."+consumer+".>"),
		api("CONSUMER.INFO."+stream+"."+consumer), api("CONSUMER.MSG.NEXT."+stream+"."+consumer),
		"$JS.ACK."+stream+"."+consumer+".>", "$JS.ACK.*.*."+stream+"."+consumer+".>")
}

// group is what only the workers may do with their shared consumers: join, consume or
// acknowledge them, or make others on their streams. Every other role is denied it, so a
// foreign client cannot take the workers' events or tasks. Deleting them is denied to every
// role but the admin.
func groupDeny(stream string) []string {
	return []string{api("CONSUMER.CREATE." + stream), api("CONSUMER.CREATE." + stream + ".>"),
		api("CONSUMER.MSG.NEXT." + stream + ".>"), "$JS.ACK." + stream + ".>", "$JS.ACK.*.*." + stream + ".>"}
}

// auditKinds are the audit entries a role other than the workers appends: what the scheduler
// loads (the policy), what operators run from the CLI (restores, retention sweeps, key
// rotations, drills) and what restorers run (restores). Auditors only read the log.
var auditKinds = map[Role][]string{
	Scheduler: {audit.KindPolicyChange},
	Operator:  {audit.KindRestore, audit.KindRetentionExpiry, audit.KindKeyRotation, audit.KindDrill, audit.KindPolicyChange},
	Restorer:  {audit.KindRestore},
}

// durableStreams hold the workers' durable consumers.
var durableStreams = []string{event.StreamName, snapshot.TaskStream}

// Permissions returns the subject permissions of role. The admin's are nil: no restriction.
// An unknown role gets permissions that allow nothing.
func Permissions(role Role, opts Options) *server.Permissions {
	o := opts.withDefaults()
	p := &perms{subAllow: []string{InboxPrefix(role) + ".>"}, subDeny: subscribeDeny}
	p.deny(neverDeny...)
	for _, s := range durableStreams {
		p.deny(api("CONSUMER.DELETE." + s + ".>"))
	}
	if role != Worker {
		for _, s := range durableStreams {
			p.deny(groupDeny(s)...)
		}
		// Only workers write the pipeline's own streams; other roles append only the audit
		// entries of what they do themselves.
		p.deny(event.DLQSubjectPrefix+">", worker.IntentSubjectPrefix+">", snapshot.TaskSubject+">")
		own := auditKinds[role]
		for _, k := range audit.Kinds {
			if !slices.Contains(own, k) {
				p.deny(audit.SubjectPrefix + k)
			}
		}
		p.deny(audit.SubjectPrefix + "*.>")
		for _, k := range own {
			p.allow(audit.SubjectPrefix + k)
		}
		if len(own) > 0 {
			p.read(audit.StreamName) // an audit entry chains to the last one
		}
	}
	// Every service opens the key store, the index, the repair queue and the snapshot
	// stores at start (config.Open), so every non-admin role binds to them.
	// CUSTOS_ERASURES holds erasure requests: workers carry them out, operators cancel them,
	// restorers and auditors read their certificates.
	stores := []string{o.KeysBucket, catalog.DefaultBucket, repair.Bucket, snapshot.JobsBucket, snapshot.SnapshotsBucket, snapshot.RecordsBucket, erasure.Bucket}

	switch role {
	case Admin:
		return nil
	case Producer:
		p.allow(event.TypePostTransaction.Subject(), event.TypePostTransactionBatch.Subject(), event.TypeManual.Subject(), event.TypeSuspiciousActivity.Subject())
		if o.ReserveDeletion {
			p.deny(event.TypeDeletionRequest.Subject())
		} else {
			p.allow(event.TypeDeletionRequest.Subject())
		}
		p.deny(event.TypeScheduleTick.Subject(), event.TypeComplianceDeadline.Subject(), "$KV.>",
			api("CONSUMER.>"))
		for _, b := range o.UploadBuckets {
			p.objectWrite(b)
		}
		if len(o.UploadBuckets) == 0 {
			p.deny(api(">"))
		}
	case Worker:
		p.bind(event.StreamName, event.DLQStreamName, audit.StreamName, worker.IntentStream)
		p.read(event.StreamName) // a redelivered event's pack is rebuilt from the stream
		p.read(audit.StreamName) // an audit entry chains to the last one
		p.durable(event.StreamName, o.WorkerConsumer)
		p.durable(snapshot.TaskStream, worker.TaskConsumer)
		p.follow(worker.IntentStream)
		p.allow(event.DLQSubjectPrefix+">", audit.SubjectPrefix+">", worker.IntentSubjectPrefix+">", snapshot.TaskSubject+">")
		for _, b := range append(stores, audit.LeaseBucket) {
			p.kvWrite(b)
		}
		for _, b := range o.UploadBuckets {
			p.objectRead(b)
		}
		p.deny(event.SubjectPrefix + ">") // workers never publish triggers
	case Scheduler:
		p.bind(event.StreamName, event.DLQStreamName, snapshot.TaskStream)
		p.allow(event.TypeScheduleTick.Subject(), event.TypeComplianceDeadline.Subject())
		p.kvWrite(o.SchedulerBucket)
		// the RPO monitor beside the scheduler reads the index and the snapshot list
		p.kvRead(catalog.DefaultBucket)
		p.kvRead(snapshot.JobsBucket)
		p.kvRead(snapshot.SnapshotsBucket)
	case Operator:
		p.bind(event.StreamName, snapshot.TaskStream)
		p.follow(event.DLQStreamName) // custos dlq
		p.allow(event.SubjectPrefix + ">")
		for _, b := range stores {
			p.kvWrite(b) // catalog rebuild, verify with repair, retention sweeps
		}
		for _, b := range o.UploadBuckets {
			p.objectWrite(b) // custos backup now --file
		}
	case Restorer, Auditor:
		p.bind(snapshot.TaskStream)
		for _, b := range stores {
			p.kvRead(b)
		}
		if role == Auditor {
			p.follow(audit.StreamName)
		}
		p.deny(event.SubjectPrefix+">", "$KV.>", "$O.>") // publishes nothing but its own audit entries
	default:
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Deny: []string{">"}},
			Subscribe: &server.SubjectPermission{Deny: []string{">"}},
		}
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: dedup(p.pubAllow), Deny: dedup(p.pubDeny)},
		Subscribe: &server.SubjectPermission{Allow: dedup(p.subAllow), Deny: dedup(p.subDeny)},
	}
}

// dedup drops repeated subjects, keeping the first of each.
func dedup(s []string) []string {
	out := make([]string, 0, len(s))
	for _, x := range s {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}
