// Package initgc pauses the garbage collector while the CLI's packages initialise.
//
// The CLI links four cloud SDKs, rclone and the broker's server; their package initialisers
// allocate about 5 MB, which is past the collector's first goal, so without this a collection
// cycle runs before main on every invocation (about 6 ms of a 50 ms start on two cores).
// Go initialises ready packages in import-path order, and this package needs only
// runtime/debug, so it runs before those SDKs do. main calls Restore first thing.
package initgc

import "runtime/debug"

// previous is the collector setting from the environment (GOGC), put back by Restore.
var previous = debug.SetGCPercent(-1)

// Restore turns the collector back on with the setting it had before this package paused it.
func Restore() { debug.SetGCPercent(previous) }
