package initgc

import (
	"os"
	"runtime/debug"
	"strconv"
	"testing"
)

// The collector is off once this package has initialised, and Restore puts back the setting
// the environment gave (GOGC, 100 when unset).
func TestPausedUntilRestore(t *testing.T) {
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Fatalf("collector at %d after init; want it paused (-1)", got)
	}
	Restore()
	want := 100
	if v := os.Getenv("GOGC"); v == "off" {
		want = -1
	} else if n, err := strconv.Atoi(v); err == nil {
		want = n
	}
	got := debug.SetGCPercent(want)
	if got != want {
		t.Fatalf("collector at %d after Restore; want %d", got, want)
	}
}
