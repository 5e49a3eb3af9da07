package event_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/custos-dev/custos/pkg/event"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// A drill trigger is a ScheduleTick with method "drill" (docs/events.md): it decodes.
func TestDrillTick(t *testing.T) {
	t.Parallel()
	m := proto.Clone(valid()[event.TypeScheduleTick]).(*custosv1.ScheduleTick)
	m.Schedule, m.Method = "drill", event.MethodDrill
	subject, hdr, data := mustEncode(t, m, event.ContentTypeProtobuf)
	ev, err := event.Decode(subject, hdr, data, testLim)
	if err != nil {
		t.Fatal(err)
	}
	if ev.ScheduleTick().GetMethod() != event.MethodDrill {
		t.Fatalf("decoded %v", ev.Msg)
	}
}
