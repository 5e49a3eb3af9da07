package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/policy"
)

// OutcomeLoaded is the outcome of a policy_change entry: a process started with that policy.
const OutcomeLoaded = "loaded"

// RecordPolicy appends a policy_change entry for the policy whose file bytes have the given
// digest (policy.Digest) unless the newest policy_change entry of the log already records that
// digest; the first policy a log sees is recorded too. It reports whether it appended.
//
// Processes that start at once with the same new policy record it once: the entry's event id is
// derived from the digest and the position of the newest policy_change entry they both read, so
// the stream's message-id de-duplication (Append) stores one of them. A later change back to an
// earlier policy follows another newest entry and is recorded again.
func (l *Log) RecordPolicy(ctx context.Context, digest, name string, now time.Time) (bool, error) {
	if !policyRE().MatchString(digest) {
		return false, fmt.Errorf("%w: policy must be a sha256: digest", ErrInvalidEntry)
	}
	prev, err := l.newestPolicy(ctx)
	if err != nil {
		return false, err
	}
	if prev.Policy == digest {
		return false, nil
	}
	id := sha256.Sum256([]byte("custos-policy-v1\x00" + strconv.FormatInt(prev.Index, 10) + "\x00" + digest))
	e := Entry{Time: now, Kind: KindPolicyChange, EventID: "policy-" + hex.EncodeToString(id[:16]),
		Policy: digest, Reason: name, Outcome: OutcomeLoaded}
	if err := l.Append(ctx, e); err != nil {
		return false, err
	}
	return true, nil
}

// newestPolicy returns the newest policy_change entry, or an entry with Index -1 when there is
// none.
func (l *Log) newestPolicy(ctx context.Context) (Entry, error) {
	none := Entry{Index: -1}
	s, err := l.js.Stream(ctx, StreamName)
	if err != nil {
		return none, fmt.Errorf("audit: stream %s: %w", StreamName, err)
	}
	m, err := s.GetLastMsgForSubject(ctx, SubjectPrefix+KindPolicyChange)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return none, nil
	}
	if err != nil {
		return none, fmt.Errorf("audit: read the newest policy_change entry: %w", err)
	}
	var e Entry
	if err := json.Unmarshal(m.Data, &e); err != nil {
		// Not an entry (the log was tampered with): record the policy again; Verify reports it.
		return Entry{Index: int64(m.Sequence) - 1}, nil
	}
	return e, nil
}

// RecordPolicyFile records, as RecordPolicy does, the policy file at path (the built-in default
// policy when path is empty) in the log of js. Services call it as they start.
func RecordPolicyFile(ctx context.Context, js jetstream.JetStream, path string, now time.Time) (bool, error) {
	b, name, err := policy.Source(path)
	if err != nil {
		return false, err
	}
	l, err := Open(ctx, js)
	if err != nil {
		return false, err
	}
	return l.RecordPolicy(ctx, policy.Digest(b), name, now)
}
