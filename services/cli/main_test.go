package main

import (
	"os"
	"testing"

	"github.com/custos-dev/custos/services/cli/internal/initgc"
)

// TestMain turns the collector back on: main does that for the command, and tests never run
// main, so without this every test of this package would run with the collector paused.
func TestMain(m *testing.M) {
	initgc.Restore()
	os.Exit(m.Run())
}
