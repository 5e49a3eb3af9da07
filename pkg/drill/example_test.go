package drill_test

import (
	"fmt"
	"time"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/drill"
)

// How a drill's estimate follows from what it measured: the rate on the sample's stored bytes,
// applied to the class's stored size.
func ExampleResult_Rate() {
	r := drill.Result{Stored: 50 << 20, Figures: audit.Figures{Seconds: 10, ClassBytes: 500 << 30}}
	estimate := time.Duration(float64(r.Figures.ClassBytes) / r.Rate() * float64(time.Second))
	fmt.Printf("%.1f MB/s, full restore in %s\n", r.Rate()/1e6, estimate)
	// Output: 5.2 MB/s, full restore in 28h26m40s
}
