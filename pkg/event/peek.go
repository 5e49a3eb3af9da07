package event

import (
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// maxPeekID bounds the identifiers Peek returns: longer ones are not valid in any event.
const maxPeekID = 1024

// Peek reads the tenant and customer of an event that Decode may have rejected, without
// validating anything else. The worker uses it to seal a dead-lettered event under the data key
// of the customer it concerns, so that erasing that customer also erases its rejected events
// (docs/design.md section 12). ok is false when the body does not parse as the subject's type,
// in either encoding, or names no customer.
func Peek(subject string, data []byte) (tenant, customer string, ok bool) {
	t, err := TypeFromSubject(subject)
	if err != nil {
		return "", "", false
	}
	msg := t.NewMessage()
	if proto.Unmarshal(data, msg) != nil || MetaOf(msg).GetCustomerId() == "" {
		msg = t.NewMessage()
		if (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, msg) != nil {
			return "", "", false
		}
	}
	m := MetaOf(msg)
	tenant, customer = m.GetTenant(), m.GetCustomerId()
	if customer == "" || len(customer) > maxPeekID || len(tenant) > maxPeekID {
		return "", "", false
	}
	return tenant, customer, true
}
