package event_test

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/event"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// A producer in Go builds the message, wraps it in an Event and encodes it; the subject, headers
// and data are what goes to NATS.
func ExampleEncode() {
	msg := &custosv1.PostTransaction{
		Meta: &custosv1.Meta{
			EventId:    "5f0c1d5e-8d7a-4d2b-9a53-2c8f3e0b7a61",
			Time:       timestamppb.New(time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)),
			Tenant:     "acme",
			CustomerId: "c-1001",
			DataClass:  "critical",
		},
		Record: &custosv1.Record{
			Key:         "orders/42",
			ContentType: "application/json",
			Source:      &custosv1.Record_Inline{Inline: []byte(`{"total":42}`)},
		},
	}
	ev, _ := event.New(msg, "//shop.example.com/orders")
	lim := event.Limits{Now: func() time.Time { return time.Date(2026, 3, 14, 15, 10, 0, 0, time.UTC) }}
	subject, hdr, data, err := lim.Encode(ev, event.ContentTypeJSON)
	if err != nil {
		panic(err)
	}
	fmt.Println(subject)
	for _, k := range []string{"ce-specversion", "ce-type", "ce-source", "ce-id", "ce-time", "Content-Type", "Nats-Msg-Id"} {
		fmt.Printf("%s: %s\n", k, hdr.Get(k))
	}
	fmt.Println(string(data))
	// Output:
	// custos.v1.events.post_transaction
	// ce-specversion: 1.0
	// ce-type: dev.custos.post_transaction.v1
	// ce-source: //shop.example.com/orders
	// ce-id: 5f0c1d5e-8d7a-4d2b-9a53-2c8f3e0b7a61
	// ce-time: 2026-03-14T15:09:26Z
	// Content-Type: application/json
	// Nats-Msg-Id: 5f0c1d5e-8d7a-4d2b-9a53-2c8f3e0b7a61
	// {"meta":{"event_id":"5f0c1d5e-8d7a-4d2b-9a53-2c8f3e0b7a61","time":"2026-03-14T15:09:26Z","tenant":"acme","customer_id":"c-1001","data_class":"critical"},"record":{"key":"orders/42","content_type":"application/json","inline":"eyJ0b3RhbCI6NDJ9"}}
}

// A worker decodes what it received; a rejected event is dead-lettered with Reason(err).
func ExampleDecode() {
	hdr := map[string][]string{
		"ce-specversion": {"1.0"},
		"ce-type":        {"dev.custos.deletion_request.v1"},
		"ce-source":      {"//crm.example.com"},
		"ce-id":          {"del-7"},
		"ce-time":        {"2026-03-14T15:09:26Z"},
		"Content-Type":   {"application/json"},
	}
	data := []byte(`{"meta":{"eventId":"del-7","time":"2026-03-14T15:09:26Z","tenant":"acme","customerId":"c-1001"},"requestedBy":"dpo@example.com"}`)
	lim := event.Limits{
		Classes: []string{"critical", "important", "non_essential"},
		Now:     func() time.Time { return time.Date(2026, 3, 14, 15, 10, 0, 0, time.UTC) },
	}

	ev, err := event.Decode("custos.v1.events.deletion_request", hdr, data, lim)
	fmt.Println(ev.Type, ev.ID(), ev.DeletionRequest().GetRequestedBy(), err)

	// The same event with a data class the policy does not define.
	data = []byte(`{"meta":{"eventId":"del-7","time":"2026-03-14T15:09:26Z","tenant":"acme","customerId":"c-1001","dataClass":"gold"},"requestedBy":"dpo@example.com"}`)
	_, err = event.Decode("custos.v1.events.deletion_request", hdr, data, lim)
	fmt.Println(errors.Is(err, event.ErrUnknownClass), event.Reason(err))
	fmt.Println(err)
	// Output:
	// deletion_request del-7 dpo@example.com <nil>
	// true unknown_class
	// unknown data class: meta.data_class "gold" (the policy defines critical, important, non_essential)
}
