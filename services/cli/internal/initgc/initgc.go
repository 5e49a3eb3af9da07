// Package initgc pauses the garbage collector while the CLI's packages initialise.
//
// The CLI links four cloud SDKs, rclone and the broker's server; their package initialisers
// allocate about 5 MB, past the collector's first goal (4 MB), so without this two collection
// cycles run before main on every invocation (about 6 ms of a 55 ms start on two cores). Go
// initialises ready packages in import-path order; this one waits for runtime/debug and so runs
// about halfway through (measured with GODEBUG=inittrace=1), still before the first cycle would
// have begun. main calls Restore first thing; so must a TestMain, since tests never run main.
package initgc

import "runtime/debug"

// previous is the collector setting from the environment (GOGC), put back by Restore.
var previous = debug.SetGCPercent(-1)

// Restore turns the collector back on with the setting it had before this package paused it.
func Restore() { debug.SetGCPercent(previous) }
