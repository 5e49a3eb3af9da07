//go:build !unix

package restore

import "os"

// createTemp creates a new file for writing in dir, named .restore-<random>.
func createTemp(dir string) (*os.File, error) { return os.CreateTemp(dir, ".restore-*") }

// rename moves oldname to newname.
func rename(oldname, newname string) error { return os.Rename(oldname, newname) }
