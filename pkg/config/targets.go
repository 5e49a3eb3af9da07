package config

import (
	"fmt"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/fs"
	"github.com/custos-dev/custos/pkg/target/stack"
)

// OpenTargets builds every configured target and wraps each with retry, concurrency limits,
// metrics and tracing. This is the one place where those wrappers are composed.
func (c *Config) OpenTargets() ([]target.Target, error) {
	out := make([]target.Target, 0, len(c.Targets))
	for _, tc := range c.Targets {
		var t target.Target
		switch tc.Kind {
		case "fs":
			ft, err := fs.New(c.Path(tc.Path), fs.WithLabel(tc.Name))
			if err != nil {
				return nil, fmt.Errorf("target %s: %w", tc.Name, err)
			}
			t = ft
		default:
			return nil, fmt.Errorf("target %s: unknown kind %q", tc.Name, tc.Kind)
		}
		conc := tc.Concurrency
		if conc <= 0 {
			conc = 16
		}
		out = append(out, stack.Build(t, stack.Config{MaxAttempts: tc.Attempts, MaxPuts: conc, MaxGets: conc}))
	}
	return out, nil
}

// TargetNames maps configured target names (as classes name them) to Target.Name() values.
func (c *Config) TargetNames(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		for _, tc := range c.Targets {
			if tc.Name == n {
				out[i] = tc.Kind + ":" + n
			}
		}
	}
	return out
}
