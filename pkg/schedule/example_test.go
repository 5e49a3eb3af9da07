package schedule_test

import (
	"fmt"
	"time"

	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/schedule"
)

// What the default policy (seed 002) schedules on the first two days of 2027. Every replica
// computes the same events with the same ids.
func ExampleCompute() {
	p := policy.Default()
	from := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, e := range schedule.Compute(p, from, from.AddDate(0, 0, 2)) {
		fmt.Println(e.Due.Format(time.RFC3339), e.Kind, e.Class, e.Name, e.Method, e.ID)
	}
	// Output:
	// 2027-01-01T02:00:00Z tick critical monthly-full full tick.default.critical.monthly-full.1798768800
	// 2027-01-01T03:00:00Z tick important monthly-full full tick.default.important.monthly-full.1798772400
	// 2027-01-01T04:00:00Z tick non_essential monthly full tick.default.non_essential.monthly.1798776000
	// 2027-01-02T02:00:00Z tick critical daily incremental tick.default.critical.daily.1798855200
}

// The scheduler sleeps until the next due time.
func ExampleNextDue() {
	p := policy.Default()
	fmt.Println(schedule.NextDue(p, time.Date(2027, 3, 31, 3, 0, 0, 0, time.UTC)).Format(time.RFC3339))
	// Output: 2027-03-31T23:00:00Z
}
