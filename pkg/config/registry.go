package config

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/registry"
)

// builtinKinds are the target kinds pkg itself opens (openProvider).
var builtinKinds = []string{"fs", "s3", "gcs", "azure"}

// optionalKinds are target kinds that a module outside pkg provides and registers
// (pkg/target/registry), with that module's path. A configuration that names one still loads in
// a binary that does not link the module (the scheduler reads the same file and opens no
// target); opening such a target there fails with an error naming the module.
var optionalKinds = map[string]string{
	"rclone": "github.com/custos-dev/custos/pkg/target/rclone",
}

// Options are the settings of a target kind registered outside pkg, written as the target's
// `options:` mapping of strings. They are held in a canonical encoding so that Target stays a
// comparable value.
type Options struct{ enc string }

// NewOptions returns Options holding a copy of m.
func NewOptions(m map[string]string) Options {
	if len(m) == 0 {
		return Options{}
	}
	b, _ := json.Marshal(m) // a map of strings always encodes; keys come out sorted
	return Options{enc: string(b)}
}

// Map returns a fresh copy of the options; nil when there are none.
func (o Options) Map() map[string]string {
	if o.enc == "" {
		return nil
	}
	var m map[string]string
	_ = json.Unmarshal([]byte(o.enc), &m) // written by NewOptions only
	return m
}

// UnmarshalYAML reads a mapping of scalars (numbers and booleans are taken as written).
func (o *Options) UnmarshalYAML(n *yaml.Node) error {
	var m map[string]string
	if err := n.Decode(&m); err != nil {
		return fmt.Errorf("options: want a mapping of names to values: %w", err)
	}
	*o = NewOptions(m)
	return nil
}

// MarshalYAML writes the options as a mapping.
func (o Options) MarshalYAML() (any, error) { return o.Map(), nil }

// spec describes t to the registered kind that opens it.
func (c *Config) spec(t Target) registry.Spec {
	return registry.Spec{Name: t.Name, Kind: t.Kind, Provider: t.Provider, Path: t.Path,
		Options: t.Options.Map(), Resolve: c.Path}
}

// validateKind checks a target whose kind is not built in: a registered kind checks its own
// settings; an optional kind that is not linked is accepted as it is.
func (c *Config) validateKind(t Target) error {
	if k, ok := registry.Lookup(t.Kind); ok {
		if k.Validate == nil {
			return nil
		}
		return k.Validate(c.spec(t))
	}
	if _, ok := optionalKinds[t.Kind]; ok {
		return nil
	}
	more := append(registry.Kinds(), slices.Collect(maps.Keys(optionalKinds))...)
	slices.Sort(more)
	kinds := append(slices.Clone(builtinKinds), slices.Compact(more)...)
	return fmt.Errorf("unknown kind %q (supported: %s)", t.Kind, strings.Join(kinds, ", "))
}

// openKind builds the bare provider of a target whose kind is not built in.
func (c *Config) openKind(ctx context.Context, t Target) (target.Target, error) {
	k, ok := registry.Lookup(t.Kind)
	if !ok {
		if mod, ok := optionalKinds[t.Kind]; ok {
			return nil, fmt.Errorf("%w: kind %q is not linked into this program (import %s)", target.ErrPermanent, t.Kind, mod)
		}
		return nil, fmt.Errorf("unknown kind %q", t.Kind)
	}
	return k.Open(ctx, c.spec(t))
}
