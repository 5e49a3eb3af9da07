package pkcs11kms

import (
	"context"
	"fmt"
	"sync"

	p11 "github.com/miekg/pkcs11"
)

// maxSessions bounds the sessions one ring opens: PKCS#11 sessions are not safe for concurrent
// use, so each operation takes one from the pool, and tokens limit how many may be open.
const maxSessions = 4

// sessions is a ring's pool of read-write user sessions on its token.
type sessions struct {
	m     *module
	slot  uint
	token string
	pin   string
	sem   chan struct{} // one element per session in use

	mu     sync.Mutex
	idle   []p11.SessionHandle
	closed bool
}

func newSessions(m *module, slot uint, token, pin string, first p11.SessionHandle) *sessions {
	return &sessions{m: m, slot: slot, token: token, pin: pin, sem: make(chan struct{}, maxSessions),
		idle: []p11.SessionHandle{first}}
}

// openSession opens a read-write session on slot (not logged in).
func openSession(m *module, slot uint, token string) (p11.SessionHandle, error) {
	sh, err := m.ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return 0, fmt.Errorf("pkcs11kms: open session on token %q: %w", token, err)
	}
	return sh, nil
}

// do runs fn with a session of its own. A session that fn's error shows broken is closed
// instead of going back to the pool.
func (s *sessions) do(ctx context.Context, fn func(sh p11.SessionHandle) error) error {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.sem }()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	var sh p11.SessionHandle
	fresh := len(s.idle) == 0
	if !fresh {
		sh = s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
	}
	s.mu.Unlock()
	if fresh {
		var err error
		if sh, err = s.open(); err != nil {
			return err
		}
	}
	err := fn(sh)
	if brokenSession(err) {
		_ = s.m.ctx.CloseSession(sh)
		return err
	}
	s.mu.Lock()
	s.idle = append(s.idle, sh)
	s.mu.Unlock()
	return err
}

// open opens another session. The process is logged in already while any of its sessions on
// the token is open; logging in again covers the case where they all broke.
func (s *sessions) open() (p11.SessionHandle, error) {
	sh, err := openSession(s.m, s.slot, s.token)
	if err != nil {
		return 0, err
	}
	if err := s.m.ctx.Login(sh, p11.CKU_USER, s.pin); err != nil && !isCode(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
		_ = s.m.ctx.CloseSession(sh)
		return 0, loginError(s.token, err)
	}
	return sh, nil
}

// close waits for the sessions in use, then closes every session. It is idempotent.
func (s *sessions) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	for range cap(s.sem) {
		s.sem <- struct{}{}
	}
	s.mu.Lock()
	for _, sh := range s.idle {
		_ = s.m.ctx.CloseSession(sh)
	}
	s.idle = nil
	s.mu.Unlock()
	// Operations waiting for a session now find the pool closed.
	for range cap(s.sem) {
		<-s.sem
	}
}

// brokenSession reports whether err means the session can no longer be used.
func brokenSession(err error) bool {
	for _, c := range []uint{
		p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED, p11.CKR_DEVICE_REMOVED,
		p11.CKR_DEVICE_ERROR, p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_USER_NOT_LOGGED_IN,
		p11.CKR_OPERATION_ACTIVE, p11.CKR_CRYPTOKI_NOT_INITIALIZED,
	} {
		if isCode(err, c) {
			return true
		}
	}
	return false
}
