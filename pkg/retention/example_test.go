package retention_test

import (
	"context"
	"fmt"
	"time"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/retention"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/mem"
)

// listIndex is a read-only stand-in for the catalog, enough for Plan.
type listIndex struct{ packs []catalog.PackRecord }

func (l listIndex) Packs(context.Context) ([]catalog.PackRecord, error) { return l.packs, nil }
func (l listIndex) CustomerRecords(context.Context) ([]catalog.CustomerRecord, error) {
	return nil, nil
}
func (listIndex) Remove(context.Context, string) error                   { return nil }
func (listIndex) RemoveTargets(context.Context, string, ...string) error { return nil }

// The default policy keeps critical backups 30 days (min 30d, daily 30): of 40 daily packs,
// the 10 oldest go.
func ExampleSweeper_Plan() {
	now := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	var packs []catalog.PackRecord
	for i := range 40 {
		at := now.AddDate(0, 0, -40+i).Add(2 * time.Hour)
		id := pack.PackID([]string{fmt.Sprint(i)})
		packs = append(packs, catalog.PackRecord{Pack: id, Class: "critical", NewestEvent: at, Committed: at})
	}
	s, err := retention.New(retention.Config{Index: listIndex{packs}, Policy: policy.Default(),
		Targets: []target.Target{mem.New()}})
	if err != nil {
		panic(err)
	}
	plan, err := s.Plan(context.Background(), now)
	if err != nil {
		panic(err)
	}
	kept := 0
	for _, d := range plan {
		if d.Keep {
			kept++
		}
	}
	fmt.Printf("kept %d of %d\n", kept, len(plan))
	fmt.Println("newest:", plan[0].Reason())
	fmt.Println("oldest:", plan[len(plan)-1].Reason())
	// Output:
	// kept 30 of 40
	// newest: daily 30: newest of 2027-02-28; younger than min retention 30d (age 22h); newest pack of class critical
	// oldest: no keep rule applies
}
