package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

const (
	day  = 24 * time.Hour
	week = 7 * day
)

// ParseDuration parses a duration as Go's time.ParseDuration does, plus the units d (24 hours)
// and w (7 days), which policies need: "30d", "2w", "1d12h", "48h", "90m". Negative durations
// are refused. A day is always 24 hours here: calendar effects (DST, month lengths) belong to
// schedules, not to durations.
func ParseDuration(s string) (time.Duration, error) {
	in := s
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if s[0] == '-' {
		return 0, fmt.Errorf("negative duration %q", in)
	}
	if s == "0" {
		return 0, nil
	}
	var total time.Duration
	for s != "" {
		i := 0
		for i < len(s) && (s[i] >= '0' && s[i] <= '9') {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("invalid duration %q (use e.g. 48h, 30d, 2w, 1d12h)", in)
		}
		j := i
		for j < len(s) && (s[j] < '0' || s[j] > '9') && s[j] != '.' {
			j++
		}
		num, unit := s[:i], s[i:j]
		var part time.Duration
		switch unit {
		case "d", "w":
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil || n > int64(1<<62/week) {
				return 0, fmt.Errorf("duration %q out of range", in)
			}
			part = time.Duration(n) * day
			if unit == "w" {
				part = time.Duration(n) * week
			}
		default:
			if j < len(s) && s[j] == '.' {
				return 0, fmt.Errorf("invalid duration %q: fractions are not supported", in)
			}
			d, err := time.ParseDuration(num + unit)
			if err != nil {
				return 0, fmt.Errorf("invalid duration %q (use e.g. 48h, 30d, 2w, 1d12h)", in)
			}
			part = d
		}
		if total > 1<<62-part {
			return 0, fmt.Errorf("duration %q out of range", in)
		}
		total += part
		s = s[j:]
	}
	return total, nil
}

// FormatDuration writes d the way policies write durations: whole days as "30d", other
// durations with d, h, m and s parts ("1d12h", "90m" is "1h30m").
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	var b strings.Builder
	if d < 0 {
		b.WriteByte('-')
		d = -d
	}
	for _, u := range []struct {
		unit string
		size time.Duration
	}{{"d", day}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}} {
		if n := d / u.size; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.unit)
			d -= n * u.size
		}
	}
	if d > 0 {
		b.WriteString(d.String())
	}
	return b.String()
}
