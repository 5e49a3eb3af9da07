package natsauth_test

import (
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/natsauth"
)

// matches reports whether subject matches the NATS pattern (tokens, "*" for one, ">" for the rest).
func matches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(p) == len(s)
}

// may reports whether sp lets a client use subject: an allow list, if any, must match it, and
// no deny may (deny wins, as in nats-server).
func may(sp *server.SubjectPermission, subject string) bool {
	if sp == nil {
		return true
	}
	ok := len(sp.Allow) == 0
	for _, a := range sp.Allow {
		ok = ok || matches(a, subject)
	}
	for _, d := range sp.Deny {
		if matches(d, subject) {
			return false
		}
	}
	return ok
}

func TestPermissions(t *testing.T) {
	t.Parallel()
	const next = "$JS.API.CONSUMER.MSG.NEXT.CUSTOS_EVENTS."
	tests := []struct {
		name    string
		role    natsauth.Role
		opts    natsauth.Options
		subject string
		want    bool
	}{
		{"producer publishes transactions", natsauth.Producer, natsauth.Options{}, event.TypePostTransaction.Subject(), true},
		{"producer asks for erasure", natsauth.Producer, natsauth.Options{}, event.TypeDeletionRequest.Subject(), true},
		{"reserved erasure", natsauth.Producer, natsauth.Options{ReserveDeletion: true}, event.TypeDeletionRequest.Subject(), false},
		{"operator asks for reserved erasure", natsauth.Operator, natsauth.Options{ReserveDeletion: true}, event.TypeDeletionRequest.Subject(), true},
		{"scheduler ticks", natsauth.Scheduler, natsauth.Options{}, event.TypeScheduleTick.Subject(), true},
		{"producer ticks", natsauth.Producer, natsauth.Options{}, event.TypeScheduleTick.Subject(), false},
		{"producer without uploads", natsauth.Producer, natsauth.Options{UploadBuckets: []string{}}, "$JS.API.STREAM.INFO.OBJ_CUSTOS_UPLOADS", false},
		{"producer with uploads", natsauth.Producer, natsauth.Options{}, "$JS.API.STREAM.INFO.OBJ_CUSTOS_UPLOADS", true},
		{"worker pulls", natsauth.Worker, natsauth.Options{}, next + "custos-workers", true},
		{"worker pulls its named consumer", natsauth.Worker, natsauth.Options{WorkerConsumer: "blue"}, next + "blue", true},
		{"worker pulls another consumer", natsauth.Worker, natsauth.Options{WorkerConsumer: "blue"}, next + "custos-workers", false},
		{"operator pulls", natsauth.Operator, natsauth.Options{}, next + "custos-workers", false},
		{"worker acks", natsauth.Worker, natsauth.Options{}, "$JS.ACK.CUSTOS_EVENTS.custos-workers.1.2.3.4.5", true},
		{"worker acks (v2 subject)", natsauth.Worker, natsauth.Options{}, "$JS.ACK._.hash.CUSTOS_EVENTS.custos-workers.1.2.3.4.5.6", true},
		{"auditor acks", natsauth.Auditor, natsauth.Options{}, "$JS.ACK.CUSTOS_EVENTS.custos-workers.1.2.3.4.5", false},
		{"worker writes keys", natsauth.Worker, natsauth.Options{}, "$KV.CUSTOS_KEYS.p00", true},
		{"restorer writes keys", natsauth.Restorer, natsauth.Options{}, "$KV.CUSTOS_KEYS.p00", false},
		{"restorer reads keys", natsauth.Restorer, natsauth.Options{}, "$JS.API.DIRECT.GET.KV_CUSTOS_KEYS.$KV.CUSTOS_KEYS.p00", true},
		{"worker deletes the shared consumer", natsauth.Worker, natsauth.Options{}, "$JS.API.CONSUMER.DELETE.CUSTOS_EVENTS.custos-workers", false},
		{"worker deletes its key watcher", natsauth.Worker, natsauth.Options{}, "$JS.API.CONSUMER.DELETE.KV_CUSTOS_KEYS.abc", true},
		{"auditor reads the audit log", natsauth.Auditor, natsauth.Options{}, "$JS.API.STREAM.MSG.GET.CUSTOS_AUDIT", true},
		{"restorer reads the audit log's head, to chain its entry", natsauth.Restorer, natsauth.Options{}, "$JS.API.STREAM.MSG.GET.CUSTOS_AUDIT", true},
		{"restorer logs its restore", natsauth.Restorer, natsauth.Options{}, "custos.v1.audit.restore", true},
		{"restorer logs an erasure", natsauth.Restorer, natsauth.Options{}, "custos.v1.audit.erasure", false},
		{"restorer logs a new kind", natsauth.Restorer, natsauth.Options{}, "custos.v1.audit.restore.x", false},
		{"scheduler logs the policy", natsauth.Scheduler, natsauth.Options{}, "custos.v1.audit.policy_change", true},
		{"scheduler logs a backup", natsauth.Scheduler, natsauth.Options{}, "custos.v1.audit.backup_commit", false},
		{"operator logs a key rotation", natsauth.Operator, natsauth.Options{}, "custos.v1.audit.key_rotation", true},
		{"operator logs suspicious activity", natsauth.Operator, natsauth.Options{}, "custos.v1.audit.suspicious_activity", false},
		{"producer logs anything", natsauth.Producer, natsauth.Options{}, "custos.v1.audit.manual", false},
		{"auditor logs anything", natsauth.Auditor, natsauth.Options{}, "custos.v1.audit.restore", false},
		{"worker takes the checkpoint lease", natsauth.Worker, natsauth.Options{}, "$KV.CUSTOS_AUDIT_LEASE.checkpoint", true},
		{"operator takes the checkpoint lease", natsauth.Operator, natsauth.Options{}, "$KV.CUSTOS_AUDIT_LEASE.checkpoint", false},
		{"unknown role", natsauth.Role("guest"), natsauth.Options{}, event.TypePostTransaction.Subject(), false},
	}
	for _, tt := range tests {
		p := natsauth.Permissions(tt.role, tt.opts)
		if got := may(p.Publish, tt.subject); got != tt.want {
			t.Errorf("%s: %s may publish %s = %v, want %v", tt.name, tt.role, tt.subject, got, tt.want)
		}
	}
}

// Only the admin changes, purges or deletes streams; every role subscribes only to its inbox.
func TestPermissionsNeverAllow(t *testing.T) {
	t.Parallel()
	never := []string{
		"$JS.API.STREAM.PURGE.KV_CUSTOS_KEYS", "$JS.API.STREAM.DELETE.CUSTOS_EVENTS", "$JS.API.STREAM.UPDATE.CUSTOS_EVENTS",
		"$JS.API.STREAM.CREATE.CUSTOS_EVENTS", "$JS.API.STREAM.MSG.DELETE.CUSTOS_AUDIT", "$JS.API.STREAM.PURGE.CUSTOS_DLQ",
		"$JS.API.CONSUMER.DURABLE.CREATE.CUSTOS_EVENTS.custos-workers", "$JS.API.ACCOUNT.PURGE", "$SYS.REQ.SERVER.PING",
	}
	for _, opts := range []natsauth.Options{{}, {ReserveDeletion: true}} {
		for _, role := range natsauth.Roles {
			p := natsauth.Permissions(role, opts)
			if role == natsauth.Admin {
				if p != nil {
					t.Errorf("admin is restricted: %+v", p)
				}
				continue
			}
			for _, s := range never {
				if may(p.Publish, s) {
					t.Errorf("%s may publish %s", role, s)
				}
			}
			inbox := natsauth.InboxPrefix(role) + ".abc.1"
			for subject, want := range map[string]bool{inbox: true, "_INBOX.other.1": false, "custos.v1.events.post_transaction": false} {
				if may(p.Subscribe, subject) != want {
					t.Errorf("%s may subscribe to %s: %v", role, subject, !want)
				}
			}
		}
	}
}
