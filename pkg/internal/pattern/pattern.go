// Package pattern holds regular expressions that are compiled on first use.
//
// A package-level regexp.MustCompile runs in every binary that links the package, at start,
// whether or not the expression is ever used; bounded repetitions such as {1,128} compile to
// large programs. The CLI links most packages and runs for a few milliseconds, so its start
// time is spent on work like this unless it is deferred.
package pattern

import (
	"regexp"
	"sync"
)

// Lazy returns a function that compiles expr on its first call and returns the same
// *regexp.Regexp on every call. It panics, on first use, if expr does not compile.
func Lazy(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}
