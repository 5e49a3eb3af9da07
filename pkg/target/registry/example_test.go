package registry_test

import (
	"context"
	"fmt"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/mem"
	"github.com/custos-dev/custos/pkg/target/registry"
)

// A module outside pkg registers its kind from an init function; pkg/config then validates and
// opens targets of that kind from the runtime configuration.
func Example() {
	registry.Register("example", registry.Kind{
		Validate: func(s registry.Spec) error {
			if s.Options["region"] == "" {
				return fmt.Errorf("options.region is required")
			}
			return nil
		},
		Open: func(_ context.Context, s registry.Spec) (target.Target, error) {
			return mem.New(mem.WithLabel(s.Name)), nil
		},
	})

	k, _ := registry.Lookup("example")
	spec := registry.Spec{Name: "north", Kind: "example", Options: map[string]string{"region": "eu"}}
	if err := k.Validate(spec); err != nil {
		panic(err)
	}
	tg, err := k.Open(context.Background(), spec)
	if err != nil {
		panic(err)
	}
	defer tg.Close()
	fmt.Println(tg.Name())
	// Output: mem:north
}
