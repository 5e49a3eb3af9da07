package broker

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrDenied means the broker refused a request because the credential may not make it (NATS
// subject permissions). Errors wrapping it also wrap nats.ErrPermissionViolation and name the
// denied subject. Retrying does not help; another credential, or other permissions, does.
var ErrDenied = errors.New("denied by the broker's permissions")

// pollInterval is how often a pending call looks for a permissions violation on its connection.
// The server reports one within a round trip; the call itself would wait for its timeout.
const pollInterval = 5 * time.Millisecond

// violationRE reads the subject out of the server's permissions error.
var violationRE = regexp.MustCompile(`Permissions Violation for (Publish|Subscription) to "([^"]+)"`)

// violation is one permissions error the server reported on a connection.
type violation struct {
	subscribe bool   // a subscription was denied, else a publish
	subject   string // the denied subject
	err       error  // as the client recorded it; wraps nats.ErrPermissionViolation
}

func parseViolation(err error) (violation, bool) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return violation{}, false
	}
	m := violationRE.FindStringSubmatch(err.Error())
	if m == nil {
		return violation{err: err}, true
	}
	return violation{subscribe: m[1] == "Subscription", subject: m[2], err: err}, true
}

// denial is the error returned for v.
func (v violation) denial() error {
	if v.subscribe {
		return fmt.Errorf("%w: this connection may not subscribe to its reply inbox (connect with its role's inbox prefix): %w", ErrDenied, v.err)
	}
	return fmt.Errorf("%w: %w", ErrDenied, v.err)
}

// Do runs call, one request or publish on nc, and returns an error wrapping ErrDenied (and
// nats.ErrPermissionViolation) as soon as the server reports that nc may not publish to subject,
// or may not subscribe to its reply inbox; then it cancels call's context and waits for call to
// return. subject may be given without its prefix: "STREAM.PURGE.KV_CUSTOS_KEYS" matches a
// violation on any subject ending in ".STREAM.PURGE.KV_CUSTOS_KEYS"; "" matches any subject.
// Otherwise Do returns call's error.
//
// The server reports violations on the connection, not on the request, so a violation caused
// at the same time by another call on nc to the same subject is taken for this call's.
func Do(ctx context.Context, nc *nats.Conn, subject string, call func(context.Context) error) error {
	_, err := watch(ctx, nc, subjectMatch(subject), func(ctx context.Context) (struct{}, error) {
		return struct{}{}, call(ctx)
	})
	return err
}

func subjectMatch(subject string) func(violation) bool {
	return func(v violation) bool {
		return v.subscribe || subject == "" || v.subject == subject || strings.HasSuffix(v.subject, "."+subject)
	}
}

// apiMatch matches the JetStream API requests that looking up, creating or updating the stream
// name make (under any API prefix), including the account lookup that creating a bucket makes
// first, and a denied reply inbox.
func apiMatch(name string) func(violation) bool {
	return func(v violation) bool {
		if v.subscribe {
			return true
		}
		if strings.HasSuffix(v.subject, ".INFO") && strings.Contains(v.subject, "API") {
			return true // the account info request of CreateKeyValue
		}
		for _, op := range []string{"INFO", "CREATE", "UPDATE"} {
			if strings.HasSuffix(v.subject, ".STREAM."+op+"."+name) {
				return true
			}
		}
		return false
	}
}

// guard runs call on js's connection as watch does.
func guard[T any](ctx context.Context, js jetstream.JetStream, match func(violation) bool, call func(context.Context) (T, error)) (T, error) {
	return watch(ctx, js.Conn(), match, call)
}

// watch runs call and, while it runs, looks for a new permissions violation on nc that match
// accepts: if one comes, it cancels call and returns the violation as ErrDenied. When call
// fails by timing out on a connection whose reply inbox was denied earlier, that is returned too.
func watch[T any](ctx context.Context, nc *nats.Conn, match func(violation) bool, call func(context.Context) (T, error)) (T, error) {
	var zero T
	before := nc.LastError()
	found := func() error {
		err := nc.LastError()
		if err == nil || err == before {
			return nil
		}
		if v, ok := parseViolation(err); ok && match(v) {
			return v.denial()
		}
		return nil
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := call(cctx)
		done <- result{v, err}
	}()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			if r.err == nil {
				return r.v, nil
			}
			if d := found(); d != nil {
				return zero, d
			}
			if timedOut(r.err) {
				// A reply inbox denied by an earlier call is never reported again.
				if v, ok := parseViolation(nc.LastError()); ok && v.subscribe {
					return zero, v.denial()
				}
			}
			return zero, r.err
		case <-tick.C:
			if d := found(); d != nil {
				cancel()
				<-done
				return zero, d
			}
		}
	}
}

func timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
}
