package registry_test

import (
	"context"
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/mem"
	"github.com/custos-dev/custos/pkg/target/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openMem(context.Context, registry.Spec) (target.Target, error) { return mem.New(), nil }

func TestRegisterLookup(t *testing.T) {
	registry.Register("test-lookup", registry.Kind{Open: openMem})
	k, ok := registry.Lookup("test-lookup")
	if !ok || k.Open == nil {
		t.Fatal("registered kind not found")
	}
	if _, ok := registry.Lookup("test-missing"); ok {
		t.Fatal("found a kind never registered")
	}
	if !slices.Contains(registry.Kinds(), "test-lookup") || !slices.IsSorted(registry.Kinds()) {
		t.Errorf("Kinds = %v", registry.Kinds())
	}
}

func TestRegisterRefuses(t *testing.T) {
	registry.Register("test-twice", registry.Kind{Open: openMem})
	for name, reg := range map[string]func(){
		"twice":   func() { registry.Register("test-twice", registry.Kind{Open: openMem}) },
		"no name": func() { registry.Register("", registry.Kind{Open: openMem}) },
		"no Open": func() { registry.Register("test-no-open", registry.Kind{}) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("Register did not panic")
				}
			}()
			reg()
		})
	}
}

func TestResolvePath(t *testing.T) {
	s := registry.Spec{}
	if s.ResolvePath("a") != "a" {
		t.Error("nil Resolve changed the path")
	}
	s.Resolve = func(p string) string { return "/etc/custos/" + p }
	if s.ResolvePath("a") != "/etc/custos/a" || s.ResolvePath("") != "" {
		t.Error("Resolve not applied, or applied to an empty path")
	}
}
