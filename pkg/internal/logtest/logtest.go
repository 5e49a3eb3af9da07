// Package logtest holds what tests use to look at logs written by other goroutines.
package logtest

import (
	"bytes"
	"sync"
)

// Buffer is a log sink safe for concurrent writers; String reads what was written so far.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
