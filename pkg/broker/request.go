package broker

import (
	"context"
	"time"
)

// RequestTimeout bounds one request to the broker made under a longer deadline (a pack commit
// may take minutes for its target writes). The client waits for a reply until its context
// ends, and applies its own default only to a context without a deadline: a reply lost while a
// cluster loses the server that held the request would otherwise hold the caller, and the
// events it heartbeats, for the whole of the longer deadline. A stream or bucket whose leader
// went elects another within seconds, so a request unanswered for this long is failed and
// retried instead.
const RequestTimeout = 10 * time.Second

// Bounded returns ctx bounded by d from now (RequestTimeout when d <= 0), or ctx's own
// deadline when that is sooner.
func Bounded(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		d = RequestTimeout
	}
	return context.WithTimeout(ctx, d)
}
