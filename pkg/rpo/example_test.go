package rpo_test

import (
	"fmt"
	"time"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/rpo"
)

// The default policy's critical class has an RPO of 48 hours; important, 7 days.
func ExampleCompute() {
	now := time.Date(2027, 3, 10, 12, 0, 0, 0, time.UTC)
	packs := []catalog.PackRecord{
		{Pack: "a", Class: "critical", Committed: now.Add(-50 * time.Hour)},
		{Pack: "b", Class: "important", Committed: now.Add(-72 * time.Hour)},
	}
	for _, s := range rpo.Compute(policy.Default(), packs, now) {
		fmt.Printf("%s age=%s rpo=%s breached=%t\n", s.Class, policy.FormatDuration(s.Age),
			policy.FormatDuration(s.RPO), s.Breached)
	}
	// Output:
	// critical age=2d2h rpo=2d breached=true
	// important age=3d rpo=7d breached=false
	// non_essential age=0 rpo=30d breached=true
}
