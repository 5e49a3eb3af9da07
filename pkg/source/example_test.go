package source_test

import (
	"fmt"

	"github.com/custos-dev/custos/pkg/source"
)

// Split points become ranges that cover every customer id exactly once, so that a full backup
// can be shared out as tasks.
func ExampleRanges() {
	for _, r := range source.Ranges([]string{"m", "f"}) {
		fmt.Printf("[%q, %q) contains \"g\": %v\n", r.From, r.To, r.Contains("g"))
	}
	// Output:
	// ["", "f") contains "g": false
	// ["f", "m") contains "g": true
	// ["m", "") contains "g": false
}
