package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"
)

// TestTraceShape checks that on-call can follow an event from the producer's publish through the
// worker to every replica write, and from a pack back to each event it holds.
func TestTraceShape(t *testing.T) {
	// The two events must share one pack: it closes at two items, and the age limit is long
	// enough that a loaded machine cannot split them.
	b := setup(t, func(c *Config) { c.PackMaxItems, c.PackMaxDelay = 2, 5*time.Second })
	b.startWorker()
	ctx, root := b.tp.Tracer("test").Start(context.Background(), "checkout")
	for i := range 2 {
		if _, err := b.producer.PublishPostTransaction(ctx, postTx(fmt.Sprintf("tr-%d", i), "c1", "critical", "k", []byte("x"))); err != nil {
			t.Fatal(err)
		}
	}
	root.End()
	b.waitSettled()
	waitFor(t, 5*time.Second, "ack spans", func() bool { return len(named(b.spans.Ended(), "ack")) == 2 })

	spans := b.spans.Ended()
	byID := map[oteltrace.SpanID]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byID[s.SpanContext().SpanID()] = s
	}
	publishes := named(spans, "publish custos.v1.events.post_transaction")
	processes := named(spans, "process custos.v1.events.post_transaction")
	if len(publishes) != 2 || len(processes) != 2 {
		t.Fatalf("%d publish and %d process spans, want 2 and 2; spans: %v", len(publishes), len(processes), names(spans))
	}
	for _, p := range processes {
		parent := byID[p.Parent().SpanID()]
		if parent == nil || parent.Name() != "publish custos.v1.events.post_transaction" {
			t.Fatalf("process span's parent is %v, want the publish span", parent)
		}
		if p.SpanContext().TraceID() != root.SpanContext().TraceID() {
			t.Fatal("process span is not in the trigger's trace")
		}
		if p.SpanKind() != oteltrace.SpanKindConsumer {
			t.Fatalf("process span kind %v", p.SpanKind())
		}
		attrs := map[string]string{}
		for _, a := range p.Attributes() {
			attrs[string(a.Key)] = a.Value.Emit()
		}
		if attrs["messaging.system"] != "nats" || attrs["messaging.destination.name"] != "custos.v1.events.post_transaction" ||
			attrs["messaging.message.id"] == "" || attrs["custos.pack.id"] == "" {
			t.Fatalf("process span attributes %v", attrs)
		}
		for _, child := range []string{"decode", "encrypt", "ack"} {
			if !hasChild(spans, p, child) {
				t.Fatalf("process span has no %q child", child)
			}
		}
	}
	commits := named(spans, "pack.commit")
	if len(commits) != 1 {
		t.Fatalf("%d pack.commit spans, want 1", len(commits))
	}
	commit := commits[0]
	linked := map[oteltrace.SpanID]bool{}
	for _, l := range commit.Links() {
		linked[l.SpanContext.SpanID()] = true
	}
	for _, p := range processes {
		if !linked[p.SpanContext().SpanID()] {
			t.Fatal("pack.commit does not link to every event it holds")
		}
	}
	write := children(spans, commit, "write pack")
	if len(write) != 1 {
		t.Fatalf("pack.commit has %d write pack children", len(write))
	}
	perTarget := map[string]bool{}
	for _, s := range spans {
		if s.Parent().SpanID() == write[0].SpanContext().SpanID() && strings.HasPrefix(s.Name(), "target.write ") {
			perTarget[strings.TrimPrefix(s.Name(), "target.write ")] = true
		}
	}
	if len(perTarget) != 3 {
		t.Fatalf("one span per target write expected, got %v", perTarget)
	}
	for _, child := range []string{"write manifest", "index"} {
		if !hasChild(spans, commit, child) {
			t.Fatalf("pack.commit has no %q child", child)
		}
	}
	// And back: each event's span links to the pack commit that made it durable.
	for _, p := range processes {
		back := false
		for _, l := range p.Links() {
			back = back || l.SpanContext.SpanID() == commit.SpanContext().SpanID()
		}
		if !back {
			t.Fatal("an event's process span does not link to its pack.commit")
		}
	}
}

// A retried event's trace shows each nak; a rejected event's trace ends in its dead_letter and
// term spans, children of the event's span.
func TestTraceOfRetriesAndDeadLetters(t *testing.T) {
	b := setup(t, func(c *Config) { c.MaxDeliver = 2; c.AckWait = time.Second })
	for _, f := range b.faults {
		f.Down()
	}
	b.startWorker()
	if _, err := b.producer.PublishPostTransaction(context.Background(), postTx("tr-dl", "c1", "critical", "k", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	b.waitSettled()
	waitFor(t, 10*time.Second, "term span", func() bool { return len(named(b.spans.Ended(), "term")) == 1 })
	spans := b.spans.Ended()
	processes := named(spans, "process custos.v1.events.post_transaction")
	naks, dead := 0, 0
	for _, p := range processes {
		naks += len(children(spans, p, "nak"))
		dead += len(children(spans, p, "dead_letter"))
		if hasChild(spans, p, "dead_letter") && !hasChild(spans, p, "term") {
			t.Fatal("the dead-lettered delivery has no term span")
		}
	}
	if naks != 1 || dead != 1 {
		t.Fatalf("%d nak and %d dead_letter spans under %d deliveries, want 1 and 1; spans: %v", naks, dead, len(processes), names(spans))
	}
}

func named(spans []sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name()
	}
	return out
}

func children(spans []sdktrace.ReadOnlySpan, parent sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name && s.Parent().SpanID() == parent.SpanContext().SpanID() {
			out = append(out, s)
		}
	}
	return out
}

func hasChild(spans []sdktrace.ReadOnlySpan, parent sdktrace.ReadOnlySpan, name string) bool {
	return len(children(spans, parent, name)) > 0
}
