package event

import (
	"slices"
	"time"
)

// Default limits.
const (
	// DefaultMaxInlineBytes bounds Record.inline: larger records go to the object store by ref.
	DefaultMaxInlineBytes = 256 << 10
	// DefaultMaxEventBytes bounds a whole message (data plus headers): 1 MiB, NATS' default
	// max_payload. It is the one documented limit (docs/events.md section 6); the worker's
	// default is this value.
	DefaultMaxEventBytes = 1 << 20
	// DefaultMaxFutureSkew is how far Meta.time may lie ahead of the receiver's clock.
	DefaultMaxFutureSkew = 10 * time.Minute
)

// Limits of the fields of events. The zero value is usable: every zero field takes its default.
type Limits struct {
	// Classes are the data classes the policy defines. nil accepts any non-empty class.
	Classes []string
	// MaxInlineBytes bounds each Record.inline; 0 means DefaultMaxInlineBytes.
	MaxInlineBytes int
	// MaxEventBytes bounds the whole message (data plus header names and values); 0 means
	// DefaultMaxEventBytes.
	MaxEventBytes int
	// RefSchemes are the allowed RecordRef.uri schemes; nil means DefaultRefSchemes.
	RefSchemes []string
	// MaxFutureSkew bounds how far Meta.time may be ahead of Now; 0 means DefaultMaxFutureSkew.
	MaxFutureSkew time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultRefSchemes are the RecordRef.uri schemes a worker can fetch.
var DefaultRefSchemes = []string{"nats-object", "https"}

// Ref URI schemes.
const (
	SchemeNATSObject = "nats-object"
	SchemeHTTPS      = "https"
)

// minTime is the earliest Meta.time accepted: anything before is a zero or garbage clock.
var minTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func (l Limits) maxInline() int {
	if l.MaxInlineBytes > 0 {
		return l.MaxInlineBytes
	}
	return DefaultMaxInlineBytes
}

func (l Limits) maxEvent() int {
	if l.MaxEventBytes > 0 {
		return l.MaxEventBytes
	}
	return DefaultMaxEventBytes
}

func (l Limits) refSchemes() []string {
	if l.RefSchemes == nil {
		return DefaultRefSchemes
	}
	return l.RefSchemes
}

func (l Limits) schemeAllowed(s string) bool {
	return slices.Contains(l.refSchemes(), s)
}

func (l Limits) classAllowed(c string) bool {
	return l.Classes == nil || slices.Contains(l.Classes, c)
}

func (l Limits) futureSkew() time.Duration {
	if l.MaxFutureSkew > 0 {
		return l.MaxFutureSkew
	}
	return DefaultMaxFutureSkew
}

func (l Limits) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}
