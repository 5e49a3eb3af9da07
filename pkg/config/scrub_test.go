package config_test

import (
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/config"
)

// The scrub runs by default; 0s turns it off.
func TestWorkerScrub(t *testing.T) {
	t.Parallel()
	const base = "nats: {url: u}\nkeys: {file: k}\ntargets: [{name: a, kind: fs, path: p}]\nclasses: {critical: {targets: [a]}}\n"
	for _, tc := range []struct {
		worker string
		every  time.Duration
		rate   int64
	}{
		{"", config.DefaultScrubInterval, config.DefaultScrubRate},
		{"worker: {scrub_interval: 0s}\n", 0, config.DefaultScrubRate},
		{"worker: {scrub_interval: 30m, scrub_rate: 1048576}\n", 30 * time.Minute, 1 << 20},
	} {
		c, err := config.Load(writeConfig(t, base+tc.worker))
		if err != nil {
			t.Fatal(err)
		}
		if got, rate := c.Worker.ScrubEvery(), c.Worker.ScrubBytesPerSecond(); got != tc.every || rate != tc.rate {
			t.Errorf("%q: every %v at %d B/s, want %v at %d", tc.worker, got, rate, tc.every, tc.rate)
		}
	}
}
