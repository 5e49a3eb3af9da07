// Package audit keeps the Custos audit log: an append-only, tamper-evident log of what was done
// to the backups (commits, restores, drills, erasures, retention expiry, key rotations, policy
// changes, manual requests and suspicious-activity alerts), one JSON entry per message of the
// JetStream stream CUSTOS_AUDIT under custos.v1.audit.<kind>. docs/audit.md is its
// specification.
//
// The log is a hash chain and a Merkle tree at once: entry n carries its position and the
// SHA-256 of entry n-1's bytes, and the tree over the entries' bytes is the transparency log of
// golang.org/x/mod/sumdb/tlog. Signed checkpoints of the tree (NewCheckpoint) are written to
// every target, with an export of the entries (pkg/repository), so Verify finds an edited,
// deleted or reordered entry from the stream or from any one target, offline.
//
// An entry never holds a raw customer identifier: Customer is the keyed pseudonym
// (docs/design.md section 2), and Append refuses anything else. Reason, RequestedBy and
// DetectedBy are free text written by operators and detectors; they are stored as given, so
// they must not contain customer data.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/internal/pattern"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"
)

// Stream and subjects of the audit log.
const (
	StreamName    = "CUSTOS_AUDIT"
	SubjectPrefix = "custos.v1.audit."
)

// Version is the format version of an entry (its "v").
const Version = 1

// Kinds of entries; the kind is the subject's last token.
const (
	// KindManual: a manual backup request the worker handled.
	KindManual = "manual"
	// KindSuspicious: a suspicious-activity alert the worker handled.
	KindSuspicious = "suspicious_activity"
	// KindBackupCommit: packs (Packs) or a snapshot (Snapshot) of Class became durable.
	KindBackupCommit = "backup_commit"
	// KindRestore: a restore ran.
	KindRestore = "restore"
	// KindDrill: a restore drill ran.
	KindDrill = "drill"
	// KindErasure: Customer was erased; Certificate names the erasure certificate.
	KindErasure = "erasure"
	// KindRetentionExpiry: backups of Class expired and were removed (Count of them).
	KindRetentionExpiry = "retention_expiry"
	// KindKeyRotation: the KEK was rotated (Key names the new one) or retired versions destroyed.
	KindKeyRotation = "key_rotation"
	// KindPolicyChange: the policy changed.
	KindPolicyChange = "policy_change"
)

// Kinds lists every kind, in the order the documentation gives them.
var Kinds = []string{KindBackupCommit, KindRestore, KindDrill, KindErasure, KindRetentionExpiry,
	KindKeyRotation, KindPolicyChange, KindManual, KindSuspicious}

// Outcomes of a handled trigger.
const (
	// OutcomeBackedUp: the event's records are durable in the packs named by Packs.
	OutcomeBackedUp = "backed_up"
	// OutcomeNoRecords: the event carried no records; nothing was stored by this worker.
	OutcomeNoRecords = "no_records"
	// OutcomeDeadLettered: the event was rejected after decoding (e.g. the customer was erased).
	OutcomeDeadLettered = "dead_lettered"
	// OutcomeSnapshotPlanned: a snapshot of the class (or the customer) was planned as job
	// Snapshot; its tasks are shared by the workers and `custos jobs` shows its progress.
	OutcomeSnapshotPlanned = "snapshot_planned"
)

// Named errors, matched with errors.Is.
var (
	// ErrInvalidEntry means an entry was refused before it was written.
	ErrInvalidEntry = errors.New("audit: invalid entry")
	// ErrTampered means the entries are not the log the checkpoints and the hash chain describe:
	// an entry is missing, moved, changed or not an entry.
	ErrTampered = errors.New("audit: the log does not verify")
	// ErrCheckpoint means a checkpoint is malformed, not signed by the verifier's key, or
	// inconsistent with another checkpoint.
	ErrCheckpoint = errors.New("audit: bad checkpoint")
	// ErrNoSigner means a checkpoint was asked of a Log opened without WithSigner.
	ErrNoSigner = errors.New("audit: no signer: open the log WithSigner")
)

var (
	// pseudonymRE matches a customer pseudonym: "p" and 32 lowercase hex digits.
	pseudonymRE = pattern.Lazy(`^p[0-9a-f]{32}$`)
	// idRE matches a pack id or a snapshot job id.
	idRE = pattern.Lazy(`^[0-9a-f]{32}$`)
	// policyRE matches a policy digest.
	policyRE = pattern.Lazy(`^sha256:[0-9a-f]{64}$`)
	// nameRE matches target names, KEK ids and certificate ids.
	nameRE = pattern.Lazy(`^[A-Za-z0-9._:-]{1,128}$`)
)

// Entry is one audit record, stored as JSON. V, Index and Prev are set by Append; the values a
// caller gives are replaced.
type Entry struct {
	V int `json:"v"`
	// Index is the entry's position in the log, from 0: its stream sequence minus 1.
	Index int64 `json:"index"`
	// Prev is the SHA-256 of the previous entry's bytes; 32 zero bytes for entry 0.
	Prev []byte `json:"prev"`

	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	EventID string    `json:"event_id"`
	Class   string    `json:"class"`
	// Customer is the customer's pseudonym; empty when the entry concerns no one customer.
	Customer    string   `json:"customer,omitempty"`
	Reason      string   `json:"reason"`
	RequestedBy string   `json:"requested_by,omitempty"`
	DetectedBy  string   `json:"detected_by,omitempty"`
	Severity    string   `json:"severity,omitempty"`
	Outcome     string   `json:"outcome"`
	Packs       []string `json:"packs,omitempty"`
	// Snapshot is the id of the snapshot job the entry concerns, if any.
	Snapshot string `json:"snapshot,omitempty"`
	// Certificate is the id of an erasure's certificate.
	Certificate string `json:"certificate,omitempty"`
	// Targets are the names of the targets concerned (a restore or drill from a target).
	Targets []string `json:"targets,omitempty"`
	// Key is a KEK id (a key rotation's new KEK).
	Key string `json:"key,omitempty"`
	// Count is how many things the entry concerns (items committed, customers restored, packs
	// expired), when that is worth recording.
	Count int64 `json:"count,omitempty"`
	// Bytes is how many plaintext bytes the entry concerns (committed, restored), when known.
	Bytes int64 `json:"bytes,omitempty"`
	// Policy is the digest of the policy file an entry was made under ("sha256:" and 64 hex
	// digits): the new policy of a policy_change entry.
	Policy string `json:"policy,omitempty"`
	// Figures are the measured figures of a restore or a drill.
	Figures *Figures `json:"figures,omitempty"`
}

// Outcomes of a drill (and of a restore).
const (
	// OutcomePassed: every item checked and the time extrapolated to the class is within its RTO.
	OutcomePassed = "passed"
	// OutcomeFailed: an item failed its checksum, a target could not be read, or the restore is
	// too slow for the class's RTO; Reason says which.
	OutcomeFailed = "failed"
)

// Figures are what a restore or a restore drill measured.
type Figures struct {
	// Items and Bytes are the items restored and checked and their plaintext bytes.
	Items int64 `json:"items"`
	Bytes int64 `json:"bytes"`
	// Seconds is the wall time of the restore.
	Seconds float64 `json:"seconds"`
	// ChecksumFailures counts items whose bytes did not match their recorded digest.
	ChecksumFailures int64 `json:"checksum_failures"`
	// ClassBytes is the stored size of the whole class, EstimatedSeconds the time a restore of
	// all of it would take at the measured rate, and RTOSeconds the class's RTO (drills).
	ClassBytes       int64   `json:"class_bytes,omitempty"`
	EstimatedSeconds float64 `json:"estimated_seconds,omitempty"`
	RTOSeconds       float64 `json:"rto_seconds,omitempty"`
}

// Validate checks that the entry is complete for its kind and names a customer only by
// pseudonym. There is no free-form map: every value is either free text the caller vouches for
// (Reason, RequestedBy, DetectedBy) or has a form that cannot hold a raw customer id.
func (e *Entry) Validate() error {
	need := func(ok bool, what string) error {
		if !ok {
			return fmt.Errorf("%w: %s entry: %s", ErrInvalidEntry, e.Kind, what)
		}
		return nil
	}
	var err error
	switch e.Kind {
	case KindManual, KindSuspicious:
		err = need(e.EventID != "" && e.Class != "", "event_id and class are required")
	case KindBackupCommit:
		err = need(e.Class != "" && (len(e.Packs) > 0 || e.Snapshot != ""), "class and packs or snapshot are required")
	case KindErasure:
		err = need(e.Customer != "" && e.Certificate != "", "customer and certificate are required")
	case KindRetentionExpiry:
		err = need(e.Class != "", "class is required")
	case KindDrill:
		err = need(e.Class != "" && len(e.Targets) > 0 && e.Figures != nil, "class, targets and figures are required")
	case KindPolicyChange:
		err = need(policyRE().MatchString(e.Policy), "policy must be a sha256: digest")
	case KindRestore, KindKeyRotation:
	default:
		return fmt.Errorf("%w: kind %q", ErrInvalidEntry, e.Kind)
	}
	if err != nil {
		return err
	}
	switch {
	case e.Outcome == "" || e.Time.IsZero():
		return fmt.Errorf("%w: time and outcome are required", ErrInvalidEntry)
	case e.Customer != "" && !pseudonymRE().MatchString(e.Customer):
		// The text does not repeat the value: it may be a raw customer id passed by mistake.
		return fmt.Errorf("%w: customer is not a pseudonym", ErrInvalidEntry)
	case e.Snapshot != "" && !idRE().MatchString(e.Snapshot):
		return fmt.Errorf("%w: snapshot is not a job id", ErrInvalidEntry)
	case e.Certificate != "" && !nameRE().MatchString(e.Certificate),
		e.Key != "" && !nameRE().MatchString(e.Key):
		return fmt.Errorf("%w: certificate and key must match %s", ErrInvalidEntry, nameRE())
	case e.Count < 0 || e.Bytes < 0:
		return fmt.Errorf("%w: count and bytes must not be negative", ErrInvalidEntry)
	case e.Policy != "" && !policyRE().MatchString(e.Policy):
		return fmt.Errorf("%w: policy must be a sha256: digest", ErrInvalidEntry)
	}
	for _, p := range e.Packs {
		if !idRE().MatchString(p) {
			return fmt.Errorf("%w: packs must be pack ids", ErrInvalidEntry)
		}
	}
	for _, t := range e.Targets {
		if !nameRE().MatchString(t) {
			return fmt.Errorf("%w: targets must match %s", ErrInvalidEntry, nameRE())
		}
	}
	return nil
}

// EnsureStream creates the audit stream if needed, or updates an existing one to this
// configuration. Entries are kept for ever (the log must stay whole to verify) and may not be
// deleted or purged through the API; the stream is de-duplicated per event within 2 minutes so
// a redelivered event is logged once.
func EnsureStream(ctx context.Context, js jetstream.JetStream) error {
	_, err := broker.Ensure(ctx, js, jetstream.StreamConfig{
		Name: StreamName, Description: "Custos audit log (tamper-evident; docs/audit.md)",
		Subjects: []string{SubjectPrefix + ">"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, Duplicates: 2 * time.Minute,
		DenyDelete: true, DenyPurge: true,
	})
	if err != nil {
		return fmt.Errorf("audit: stream %s: %w", StreamName, err)
	}
	return nil
}

// Option configures a Log.
type Option interface{ apply(*Log) }

type optionFunc func(*Log)

func (f optionFunc) apply(l *Log) { f(l) }

// WithSigner gives the Log the key that signs its checkpoints. The caller owns the key.
func WithSigner(s note.Signer) Option { return optionFunc(func(l *Log) { l.signer = s }) }

// Log appends entries to the audit stream and signs checkpoints of it. It is safe for
// concurrent use; appends of one Log are serialized, and appends of many processes are
// ordered by the stream (each names the sequence it expects to follow).
type Log struct {
	js     jetstream.JetStream
	signer note.Signer

	mu sync.Mutex
	// head is the stream's last sequence and the SHA-256 of its entry, as last seen.
	known   bool
	lastSeq uint64
	last    [32]byte
}

// Open ensures the stream exists and returns a Log writing to it.
func Open(ctx context.Context, js jetstream.JetStream, opts ...Option) (*Log, error) {
	if err := EnsureStream(ctx, js); err != nil {
		return nil, err
	}
	l := &Log{js: js}
	for _, o := range opts {
		o.apply(l)
	}
	return l, nil
}

// maxConflicts bounds the retries of one Append against appends of other processes.
const maxConflicts = 1000

// Append validates e and stores it as the log's next entry, waiting for the server's
// acknowledgement. The entry is published with the stream sequence it must follow; when another
// process appended first, Append reads the new head and tries again, so entry n's position and
// its Prev are fixed. An entry with an event id gets a message id derived from its kind, event
// id and outcome: appending the same event's entry again within the duplicate window stores it
// once, while the steps of one event with different outcomes (an erasure requested, then done)
// are each stored.
func (l *Log) Append(ctx context.Context, e Entry) error {
	if err := e.Validate(); err != nil {
		return err
	}
	e.Time = e.Time.UTC()
	e.V = Version
	l.mu.Lock()
	defer l.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if !l.known {
			if err := l.loadHead(ctx); err != nil {
				return err
			}
		}
		e.Index, e.Prev = int64(l.lastSeq), l.last[:]
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		msg := &nats.Msg{Subject: SubjectPrefix + e.Kind, Data: b, Header: nats.Header{}}
		if e.EventID != "" {
			msg.Header.Set(nats.MsgIdHdr, "audit."+e.Kind+"."+e.EventID+"."+e.Outcome)
		}
		ack, err := l.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequence(l.lastSeq))
		switch {
		case err == nil && ack.Duplicate:
			return nil // logged before, within the duplicate window; the head did not move
		case err == nil && ack.Sequence == l.lastSeq+1:
			l.lastSeq, l.last = ack.Sequence, sha256.Sum256(b)
			return nil
		case err == nil:
			l.known = false
			return nil
		case !wrongLastSequence(err):
			l.known = false
			return fmt.Errorf("audit: append %s entry: %w", e.Kind, err)
		case attempt >= maxConflicts:
			return fmt.Errorf("audit: append %s entry: gave up after %d conflicting appends: %w", e.Kind, attempt, err)
		}
		l.known = false
		// Another process appended first: wait a little (jittered, growing) and read the head.
		wait := time.Duration(rand.N(int64(min(1<<min(attempt, 7), 100)))+1) * time.Millisecond
		select {
		case <-ctx.Done():
			return fmt.Errorf("audit: append %s entry: %w", e.Kind, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// loadHead reads the stream's last sequence and the hash of the newest entry at or before it.
// When that entry was deleted (the log was tampered with), the next entry chains to the newest
// one that exists: the log goes on, and Verify reports the missing entry.
func (l *Log) loadHead(ctx context.Context) error {
	s, err := l.js.Stream(ctx, StreamName)
	if err != nil {
		return fmt.Errorf("audit: stream %s: %w", StreamName, err)
	}
	last := s.CachedInfo().State.LastSeq
	l.lastSeq, l.last = last, [32]byte{}
	if last == 0 {
		l.known = true
		return nil
	}
	m, err := s.GetMsg(ctx, last)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		m, err = s.GetLastMsgForSubject(ctx, SubjectPrefix+">")
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			l.known = true
			return nil
		}
		if err == nil && m.Sequence > last {
			return nil // appended meanwhile: the publish fails and the head is read again
		}
	}
	if err != nil {
		return fmt.Errorf("audit: read the last entry: %w", err)
	}
	l.last, l.known = sha256.Sum256(m.Data), true
	return nil
}

// wrongLastSequence reports whether err is the server's answer to a publish whose expected last
// sequence is not the stream's (10071; 10164 on replicated streams).
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Checkpoint reads the whole stream, checks its hash chain and returns a signed checkpoint of
// it made at now (see NewCheckpoint). It fails with ErrNoSigner without WithSigner, and with
// ErrTampered when the stream's entries do not chain.
func (l *Log) Checkpoint(ctx context.Context, now time.Time) ([]byte, error) {
	if l.signer == nil {
		return nil, ErrNoSigner
	}
	entries, err := ReadEntries(ctx, l.js)
	if err != nil {
		return nil, err
	}
	return NewCheckpoint(entries, now, l.signer)
}

// readBatch is how many entries ReadEntries asks for at once.
const readBatch = 512

// ReadEntries returns the bytes of every entry of the stream, by position: element n is the
// message of stream sequence n+1, nil where that message is missing. It reads through an
// ephemeral consumer and deletes it when done. A missing stream is an empty log.
func ReadEntries(ctx context.Context, js jetstream.JetStream) ([][]byte, error) {
	s, err := js.Stream(ctx, StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: stream %s: %w", StreamName, err)
	}
	st := s.CachedInfo().State
	out := make([][]byte, st.LastSeq)
	if st.Msgs == 0 {
		return out, nil
	}
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy, MemoryStorage: true, InactiveThreshold: time.Minute})
	if err != nil {
		return nil, fmt.Errorf("audit: read the log: %w", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		s.DeleteConsumer(ctx, c.CachedInfo().Name) //nolint:errcheck // it expires on its own
	}()
	for remaining := st.Msgs; remaining > 0; {
		batch, err := c.Fetch(int(min(remaining, readBatch)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("audit: read the log: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("audit: read the log: %w", err)
			}
			if seq := meta.Sequence.Stream; seq >= 1 && seq <= st.LastSeq {
				out[seq-1] = m.Data()
				got++
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("audit: read the log: %w", err)
		}
		if got == 0 {
			break // the rest was deleted while we read
		}
		remaining -= uint64(got)
	}
	return out, nil
}

// List returns up to limit entries, the newest last. A limit <= 0 returns every entry. An
// entry that does not parse is skipped. List does not verify anything: see Verify.
func List(ctx context.Context, js jetstream.JetStream, limit int) ([]Entry, error) {
	s, err := js.Stream(ctx, StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: stream %s: %w", StreamName, err)
	}
	st := s.CachedInfo().State
	if st.Msgs == 0 {
		return nil, nil
	}
	first := st.FirstSeq
	if limit > 0 && st.LastSeq-first+1 > uint64(limit) {
		first = st.LastSeq - uint64(limit) + 1
	}
	var out []Entry
	for seq := first; seq <= st.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("audit: read entry %d: %w", seq, err)
		}
		var e Entry
		if json.Unmarshal(m.Data, &e) == nil {
			out = append(out, e)
		}
	}
	return out, nil
}

// Name returns s in the form entries accept for target names and key ids
// ([A-Za-z0-9._:-]{1,128}): every other character becomes "_", and the result is cut to 128
// characters ("_" for an empty s). Target names such as "s3:bucket/prefix" are recorded so.
func Name(s string) string {
	if nameRE().MatchString(s) {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b[:min(len(b), 128)])
}

// ListKind returns every entry of one kind, oldest first, reading only that kind's subject (a
// status page or `custos drill list` need the few drill entries, not the whole log). An entry
// that does not parse is skipped. Like List, it verifies nothing.
func ListKind(ctx context.Context, js jetstream.JetStream, kind string) ([]Entry, error) {
	s, err := js.Stream(ctx, StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: stream %s: %w", StreamName, err)
	}
	if _, err := s.GetLastMsgForSubject(ctx, SubjectPrefix+kind); errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil // no entry of the kind: nothing to wait for
	} else if err != nil {
		return nil, fmt.Errorf("audit: read %s entries: %w", kind, err)
	}
	c, err := js.OrderedConsumer(ctx, StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{SubjectPrefix + kind}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, fmt.Errorf("audit: read %s entries: %w", kind, err)
	}
	var out []Entry
	for {
		batch, err := c.FetchNoWait(readBatch)
		if err != nil {
			return out, fmt.Errorf("audit: read %s entries: %w", kind, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			var e Entry
			if json.Unmarshal(m.Data(), &e) == nil {
				out = append(out, e)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return out, fmt.Errorf("audit: read %s entries: %w", kind, err)
		}
		// The consumer exists once fetched from: it says whether entries of the kind remain.
		info, err := c.Info(ctx)
		if err != nil {
			return out, fmt.Errorf("audit: read %s entries: %w", kind, err)
		}
		if info.NumPending == 0 {
			return out, nil
		}
		if got == 0 {
			select { // delivered entries are on their way
			case <-ctx.Done():
				return out, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}
