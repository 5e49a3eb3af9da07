package audit_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/custos-dev/custos/pkg/audit"
)

// An entry names its customer by pseudonym only; a raw id is refused before anything is written,
// and the error does not repeat it.
func ExampleEntry_Validate() {
	e := audit.Entry{Time: time.Now(), Kind: audit.KindManual, EventID: "5f0c1d5e", Class: "critical",
		Customer: "c-1001", Reason: "restore drill", RequestedBy: "alice@ops", Outcome: audit.OutcomeNoRecords}
	err := e.Validate()
	fmt.Println(errors.Is(err, audit.ErrInvalidEntry), err)

	e.Customer = "p0b7c7fce795c1d0468b281827e2015c7" // what keys.Pseudonymizer returns
	fmt.Println(e.Validate())
	// Output:
	// true audit: invalid entry: customer is not a pseudonym
	// <nil>
}
