// Package registry holds the target kinds that are not built into pkg: a module outside pkg
// (pkg/target/rclone, say) registers its kind from an init function, and a binary that imports
// that module can then open targets of the kind. A binary that does not import it never links
// the kind's SDKs.
//
// pkg/config looks kinds up here when it validates the runtime configuration and when it opens
// targets; the built-in kinds (fs, s3, gcs, azure) are not registered here.
package registry

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/custos-dev/custos/pkg/target"
)

// Spec is one target of a registered kind as the runtime configuration describes it. It never
// holds secrets: a kind reads those from the environment or from a file that Options names.
type Spec struct {
	// Name is the configured name; the opened target's Name() is Kind + ":" + Name.
	Name string
	// Kind is the registered kind ("rclone").
	Kind string
	// Provider is the kind's variant (for rclone, the backend: "sftp", "webdav", ...).
	Provider string
	// Path is where on the storage the objects live (a directory on the remote).
	Path string
	// Options are the kind's settings, as written in the configuration.
	Options map[string]string
	// Resolve turns a file path written in the configuration into a usable one (relative paths
	// are relative to the configuration file). Nil leaves paths as they are.
	Resolve func(path string) string
}

// ResolvePath applies s.Resolve to p, or returns p when Resolve is nil.
func (s Spec) ResolvePath(p string) string {
	if s.Resolve == nil || p == "" {
		return p
	}
	return s.Resolve(p)
}

// Kind is what a module registers for one kind of target.
type Kind struct {
	// Validate checks a spec without reaching the storage (configuration errors only); it runs
	// when the configuration is loaded. Nil accepts every spec.
	Validate func(s Spec) error
	// Open builds the bare provider; ctx bounds this call only. Wrappers (retry, limits,
	// metrics, tracing) are added by the caller.
	Open func(ctx context.Context, s Spec) (target.Target, error)
}

var (
	mu    sync.RWMutex
	kinds = map[string]Kind{}
)

// Register adds a kind. It panics when name is empty, Open is nil or the name is taken: each is
// a programming error found at start-up.
func Register(name string, k Kind) {
	if name == "" || k.Open == nil {
		panic("registry: Register needs a kind name and an Open function")
	}
	mu.Lock()
	defer mu.Unlock()
	if _, dup := kinds[name]; dup {
		panic(fmt.Sprintf("registry: kind %q registered twice", name))
	}
	kinds[name] = k
}

// Lookup returns the kind registered under name.
func Lookup(name string) (Kind, bool) {
	mu.RLock()
	defer mu.RUnlock()
	k, ok := kinds[name]
	return k, ok
}

// Kinds returns the registered kind names, sorted.
func Kinds() []string {
	mu.RLock()
	defer mu.RUnlock()
	return slices.Sorted(maps.Keys(kinds))
}
