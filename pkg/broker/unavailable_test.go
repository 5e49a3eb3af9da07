package broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/broker"
)

// A service starting against a broker waits and tries again only when the broker could not
// answer; an answer that will not change (a denial, a missing stream) is returned at once.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	b := setup(t)

	// Errors the real broker and client give.
	_, denied := broker.Ensure(ctx(t), b.reader, streamConfig("OTHER", time.Hour))
	_, missing := b.admin.Stream(ctx(t), "MISSING")
	late, cancel := context.WithTimeout(t.Context(), time.Nanosecond)
	defer cancel()
	<-late.Done()
	_, timedOut := b.admin.Stream(late, "MISSING")
	_, noServers := nats.Connect("nats://127.0.0.1:1", nats.Timeout(time.Second))
	for name, c := range map[string]struct {
		err  error
		want bool
	}{
		"denied":             {denied, false},
		"stream not found":   {missing, false},
		"request timed out":  {timedOut, true},
		"no server":          {noServers, true},
		"no responders":      {fmt.Errorf("create consumer: %w", nats.ErrNoResponders), true},
		"client timeout":     {nats.ErrTimeout, true},
		"reconnecting":       {nats.ErrConnectionReconnecting, true},
		"jetstream 503":      {&jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}, true},
		"watcher 503":        {fmt.Errorf("watch bucket: %w", &nats.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}), true},
		"watcher 404":        {&nats.APIError{Code: 404, ErrorCode: nats.JSErrCodeStreamNotFound}, false},
		"jetstream 400":      {&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamNameInUse}, false},
		"another error":      {errors.New("consumer settings differ"), false},
		"denial that waited": {fmt.Errorf("%w: %w", broker.ErrDenied, context.DeadlineExceeded), false},
		"no error":           {nil, false},
	} {
		if name != "no error" && c.err == nil {
			t.Errorf("%s: the broker gave no error", name)
			continue
		}
		if got := broker.Unavailable(c.err); got != c.want {
			t.Errorf("%s: Unavailable(%v) = %v, want %v", name, c.err, got, c.want)
		}
	}
}
