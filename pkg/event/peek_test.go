package event_test

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/custos-dev/custos/pkg/event"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

func TestPeek(t *testing.T) {
	// Invalid as an event (no event id, no time), but it names its customer.
	m := &custosv1.PostTransaction{Meta: &custosv1.Meta{Tenant: "acme", CustomerId: "c-7"}}
	bin, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	js, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	subj := event.TypePostTransaction.Subject()
	for name, data := range map[string][]byte{"protobuf": bin, "json": js} {
		tenant, customer, ok := event.Peek(subj, data)
		if !ok || tenant != "acme" || customer != "c-7" {
			t.Errorf("%s: Peek = %q, %q, %v", name, tenant, customer, ok)
		}
	}
	for name, c := range map[string]struct {
		subj string
		data []byte
	}{
		"garbage":      {subj, []byte("\xff\xfe not an event")},
		"unknown type": {"custos.v1.events.nope", bin},
		"no customer":  {subj, []byte(`{"meta":{"tenant":"acme"}}`)},
	} {
		if _, _, ok := event.Peek(c.subj, c.data); ok {
			t.Errorf("%s: Peek found a customer", name)
		}
	}
}
