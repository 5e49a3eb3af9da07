// Package jsonappend appends JSON by hand for the formats Custos seals often (pack manifests,
// catalog entries, item headers, snapshot task manifests), giving exactly the bytes
// encoding/json gives for the values it accepts.
//
// Reflection-driven encoding of those structures cost a tenth of a worker's CPU. A caller
// writes its fields in encoding/json's order and, when Buf.OK is false at the end, encodes the
// value with encoding/json instead, whole: the formats design.md describes never change, and
// sealing stays deterministic.
package jsonappend

import (
	"encoding/json"
	"strconv"
	"time"
)

// Buf is JSON being appended. OK turns false at the first value it does not encode as
// encoding/json would (a string that needs escaping, a time outside RFC 3339).
type Buf struct {
	B  []byte
	OK bool
}

// New returns an empty Buf with room for size bytes.
func New(size int) *Buf { return &Buf{B: make([]byte, 0, size), OK: true} }

// Bytes returns what was appended, or, when a value was not plain (OK is false), v encoded by
// encoding/json: v is the value the caller was appending.
func (a *Buf) Bytes(v any) ([]byte, error) {
	if !a.OK {
		return json.Marshal(v)
	}
	return a.B, nil
}

// Raw appends s as it is: punctuation and field names the caller wrote correctly.
func (a *Buf) Raw(s string) { a.B = append(a.B, s...) }

// Str appends s as a JSON string, or clears OK when encoding/json would escape any of it.
func (a *Buf) Str(s string) {
	if !plain(s) {
		a.OK = false
		return
	}
	a.B = append(append(append(a.B, '"'), s...), '"')
}

// Int and Uint append numbers.
func (a *Buf) Int(n int64)   { a.B = strconv.AppendInt(a.B, n, 10) }
func (a *Buf) Uint(n uint64) { a.B = strconv.AppendUint(a.B, n, 10) }

// Time appends t as Time.MarshalJSON does: RFC 3339 with sub-second digits, refused (OK
// cleared) outside what RFC 3339 can hold.
func (a *Buf) Time(t time.Time) {
	var err error
	a.B = append(a.B, '"')
	if a.B, err = t.AppendText(a.B); err != nil {
		a.OK = false
	}
	a.B = append(a.B, '"')
}

// plain reports whether encoding/json writes s between quotes unchanged: printable ASCII other
// than the quote, the backslash and the characters it escapes for HTML (<, >, &).
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
