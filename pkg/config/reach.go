package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/custos-dev/custos/pkg/target"
)

// ProbeTimeout bounds the probe of each target in CheckReachable.
const ProbeTimeout = 10 * time.Second

// probePrefix is what a probe lists: no object lives under it, so a probe reads nothing.
const probePrefix = "custos-probe/"

// CheckReachable probes every target at once with a List of an empty prefix, bounded by
// ProbeTimeout (or ctx), and logs a warning for each target that fails. It returns an error
// naming every class that reaches fewer of its targets than its min_replicas (all of them when
// 0): no write of that class could be acknowledged. With enough targets the others are caught up
// by the repairer once they return.
//
// A probe goes to the target below its retry, limit and metrics wrappers (through Unwrap), so
// that it answers at once and counts as no operation. A probe still blocked when the timeout
// ends (a hung filesystem call) is left to finish on its own.
func (c *Config) CheckReachable(ctx context.Context, targets []target.Target, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(targets)) // buffered: an abandoned probe never blocks
	for _, t := range targets {
		go func() {
			err := bare(t).List(ctx, probePrefix, func(target.Info) error { return nil })
			results <- result{t.Name(), err}
		}()
	}
	down := map[string]error{}
	for _, t := range targets {
		down[t.Name()] = fmt.Errorf("no answer in %s", ProbeTimeout)
	}
wait:
	for range targets {
		select {
		case r := <-results:
			if r.err == nil {
				delete(down, r.name)
			} else {
				down[r.name] = r.err
			}
		case <-ctx.Done():
			break wait
		}
	}
	for _, t := range targets {
		if err, ok := down[t.Name()]; ok {
			log.Warn("target unreachable; writes go to the other targets and repairs catch it up when it returns",
				"target", t.Name(), "err", err)
		}
	}
	known := map[string]bool{}
	for _, t := range targets {
		known[t.Name()] = true
	}
	var errs []error
	for _, class := range slices.Sorted(maps.Keys(c.Classes)) {
		cl := c.Classes[class]
		need := cl.MinReplicas
		if need == 0 {
			need = len(cl.Targets)
		}
		var unreachable []string
		for _, n := range c.TargetNames(cl.Targets) {
			if _, ok := down[n]; ok || !known[n] {
				unreachable = append(unreachable, n)
			}
		}
		if reach := len(cl.Targets) - len(unreachable); reach < need {
			errs = append(errs, fmt.Errorf("class %s reaches %d of its %d targets, fewer than the %d it needs (unreachable: %s)",
				class, reach, len(cl.Targets), need, strings.Join(unreachable, ", ")))
		}
	}
	return errors.Join(errs...)
}

// bare returns the innermost target reachable through Unwrap: the provider, or a lazy target
// whose provider is not built yet.
func bare(t target.Target) target.Target {
	for {
		u, ok := t.(interface{ Unwrap() target.Target })
		if !ok {
			return t
		}
		inner := u.Unwrap()
		if inner == nil {
			return t
		}
		t = inner
	}
}
