// Package audit keeps the Custos audit log: one JSON entry per operator-visible trigger the
// worker handled (manual backup requests, suspicious-activity alerts), on the JetStream stream
// CUSTOS_AUDIT under custos.v1.audit.<kind>.
//
// An entry never holds a raw customer identifier: Customer is the keyed pseudonym
// (docs/design.md section 2), and Append refuses anything else. Reason, RequestedBy and
// DetectedBy are free text written by operators and detectors; they are stored as given, so
// they must not contain customer data.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream and subjects of the audit log.
const (
	StreamName    = "CUSTOS_AUDIT"
	SubjectPrefix = "custos.v1.audit."
)

// Kinds of entries; the kind is the subject's last token.
const (
	KindManual     = "manual"
	KindSuspicious = "suspicious_activity"
)

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

// ErrInvalidEntry means an entry was refused before it was written.
var ErrInvalidEntry = errors.New("audit: invalid entry")

// pseudonymRE matches a customer pseudonym: "p" and 32 lowercase hex digits.
var pseudonymRE = regexp.MustCompile(`^p[0-9a-f]{32}$`)

// Entry is one audit record, stored as JSON.
type Entry struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	EventID string    `json:"event_id"`
	Class   string    `json:"class"`
	// Customer is the customer's pseudonym; empty when the event named no customer.
	Customer    string   `json:"customer,omitempty"`
	Reason      string   `json:"reason"`
	RequestedBy string   `json:"requested_by,omitempty"`
	DetectedBy  string   `json:"detected_by,omitempty"`
	Severity    string   `json:"severity,omitempty"`
	Outcome     string   `json:"outcome"`
	Packs       []string `json:"packs,omitempty"`
	// Snapshot is the id of the snapshot job the trigger planned, if any.
	Snapshot string `json:"snapshot,omitempty"`
}

// Validate checks that the entry is complete and names a customer only by pseudonym.
func (e *Entry) Validate() error {
	switch {
	case e.Kind != KindManual && e.Kind != KindSuspicious:
		return fmt.Errorf("%w: kind %q", ErrInvalidEntry, e.Kind)
	case e.EventID == "" || e.Class == "" || e.Outcome == "" || e.Time.IsZero():
		return fmt.Errorf("%w: time, event_id, class and outcome are required", ErrInvalidEntry)
	case e.Customer != "" && !pseudonymRE.MatchString(e.Customer):
		// The text does not repeat the value: it may be a raw customer id passed by mistake.
		return fmt.Errorf("%w: customer is not a pseudonym", ErrInvalidEntry)
	}
	return nil
}

// EnsureStream creates the audit stream if needed. Entries are kept a year by default; the
// stream is de-duplicated per event within 2 minutes so a redelivered event is logged once.
func EnsureStream(ctx context.Context, js jetstream.JetStream) error {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: StreamName, Description: "Custos audit log: manual and suspicious-activity triggers",
		Subjects: []string{SubjectPrefix + ">"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, MaxAge: 366 * 24 * time.Hour, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("audit: stream %s: %w", StreamName, err)
	}
	return nil
}

// Log appends entries to the audit stream.
type Log struct {
	js jetstream.JetStream
}

// Open ensures the stream exists and returns a Log writing to it.
func Open(ctx context.Context, js jetstream.JetStream) (*Log, error) {
	if err := EnsureStream(ctx, js); err != nil {
		return nil, err
	}
	return &Log{js: js}, nil
}

// Append validates e and stores it, waiting for the server's acknowledgement. The message id is
// derived from the kind and event id, so appending the same event's entry again within the
// duplicate window stores it once.
func (l *Log) Append(ctx context.Context, e Entry) error {
	if err := e.Validate(); err != nil {
		return err
	}
	e.Time = e.Time.UTC()
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	msg := &nats.Msg{Subject: SubjectPrefix + e.Kind, Data: b,
		Header: nats.Header{nats.MsgIdHdr: []string{"audit." + e.Kind + "." + e.EventID}}}
	if _, err := l.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("audit: append %s entry: %w", e.Kind, err)
	}
	return nil
}

// List returns up to limit entries, the newest last. A limit <= 0 returns every entry. An
// entry that does not parse is skipped.
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
