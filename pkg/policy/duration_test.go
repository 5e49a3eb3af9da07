package policy_test

import (
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/policy"
)

func TestParseDuration(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"48h", 48 * time.Hour, true},
		{"30d", 30 * day, true},
		{"2w", 14 * day, true},
		{"1d12h", 36 * time.Hour, true},
		{"1w2d3h4m5s", 9*day + 3*time.Hour + 4*time.Minute + 5*time.Second, true},
		{"90m", 90 * time.Minute, true},
		{"250ms", 250 * time.Millisecond, true},
		{"0", 0, true},
		{"", 0, false},
		{"-1d", 0, false},
		{"1.5d", 0, false},
		{"1.5h", 0, false},
		{"d", 0, false},
		{"30", 0, false},
		{"3y", 0, false},
		{"2 days", 0, false},
		{"999999999999w", 0, false},
	} {
		got, err := policy.ParseDuration(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                              "0",
		30 * 24 * time.Hour:            "30d",
		36 * time.Hour:                 "1d12h",
		90 * time.Minute:               "1h30m",
		48 * time.Hour:                 "2d",
		time.Second + time.Millisecond: "1s1ms",
	} {
		if got := policy.FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
