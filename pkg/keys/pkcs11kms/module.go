package pkcs11kms

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	p11 "github.com/miekg/pkcs11"
)

// module is a PKCS#11 library loaded once in this process. C_Initialize may run once per
// library and process, and C_Finalize ends every session of every caller, so all rings on one
// library share a module and the last one to close finalizes it.
type module struct {
	key  string // the library's resolved path, its key in modules
	path string // the path first given, for messages
	ctx  *p11.Ctx
	refs int
	// own is set when this package ran C_Initialize; otherwise another part of the process
	// did, and finalizing is theirs.
	own bool
	// logins holds, per slot, the rings logged in to its token and a digest of their PIN.
	// Login state belongs to the process: without this, an Open with a wrong PIN would succeed
	// while another ring is logged in to the same token.
	logins map[uint]*login
}

type login struct {
	pin  [sha256.Size]byte
	refs int
}

// modules are the loaded libraries by resolved path. Its mutex also guards every module's
// refs and logins.
var modules = struct {
	sync.Mutex
	m map[string]*module
}{m: map[string]*module{}}

// loadModule loads and initializes the library at path, or returns the one already loaded.
func loadModule(path string) (*module, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("pkcs11kms: PKCS#11 module %s: %w", path, err)
	}
	// One library reached through a symlink and through its real path is one library.
	key := filepath.Clean(path)
	if real, err := filepath.EvalSymlinks(path); err == nil {
		key = real
	}
	modules.Lock()
	defer modules.Unlock()
	if m := modules.m[key]; m != nil {
		m.refs++
		return m, nil
	}
	ctx := p11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("pkcs11kms: PKCS#11 module %s: cannot load it as a PKCS#11 library", path)
	}
	own := true
	if err := ctx.Initialize(); err != nil {
		if !isCode(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
			ctx.Destroy()
			return nil, fmt.Errorf("pkcs11kms: initialize PKCS#11 module %s: %w", path, err)
		}
		own = false
	}
	m := &module{key: key, path: path, ctx: ctx, refs: 1, own: own, logins: map[uint]*login{}}
	modules.m[key] = m
	return m, nil
}

// release drops one reference; the last finalizes and unloads the library.
func (m *module) release() {
	modules.Lock()
	defer modules.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(modules.m, m.key)
	if m.own {
		_ = m.ctx.Finalize()
	}
	m.ctx.Destroy()
}

// findToken returns the slot holding the initialized token labelled label.
func (m *module) findToken(label string) (uint, error) {
	slots, err := m.ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("pkcs11kms: list slots: %w", err)
	}
	var found []uint
	for _, s := range slots {
		ti, err := m.ctx.GetTokenInfo(s)
		if err != nil {
			continue // a slot emptied since the list was taken
		}
		if ti.Flags&p11.CKF_TOKEN_INITIALIZED != 0 && ti.Label == label {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("%w: no initialized token labelled %q in %s", ErrToken, label, m.path)
	case 1:
		return found[0], nil
	default:
		return 0, fmt.Errorf("%w: %d tokens labelled %q in %s; labels must be unique", ErrToken, len(found), label, m.path)
	}
}

// login logs the process in to the token in slot as its user, through session sh. If the
// process is already logged in by another ring, the PIN must be the one that ring gave.
func (m *module) login(sh p11.SessionHandle, slot uint, token, pin string) error {
	sum := sha256.Sum256([]byte(pin))
	modules.Lock()
	defer modules.Unlock()
	l := m.logins[slot]
	err := m.ctx.Login(sh, p11.CKU_USER, pin)
	switch {
	case err == nil:
	case isCode(err, p11.CKR_USER_ALREADY_LOGGED_IN):
		// Logged in by another ring: its PIN must be this one. Logged in by some other user of
		// the library in this process (l is nil): the PIN cannot be checked without logging
		// them out, and this process holds the token already.
		if l != nil && subtle.ConstantTimeCompare(l.pin[:], sum[:]) != 1 {
			return fmt.Errorf("%w: token %q: this process is already logged in to it with another PIN", ErrPIN, token)
		}
	default:
		return loginError(token, err)
	}
	if l == nil {
		l = &login{}
		m.logins[slot] = l
	}
	l.pin = sum
	l.refs++
	return nil
}

// logout forgets one ring's login. The token logs the process out by itself when its last
// session closes.
func (m *module) logout(slot uint) {
	modules.Lock()
	defer modules.Unlock()
	if l := m.logins[slot]; l != nil {
		if l.refs--; l.refs <= 0 {
			delete(m.logins, slot)
		}
	}
}

func loginError(token string, err error) error {
	switch {
	case isCode(err, p11.CKR_PIN_INCORRECT), isCode(err, p11.CKR_PIN_INVALID), isCode(err, p11.CKR_PIN_LEN_RANGE):
		return fmt.Errorf("%w: token %q rejected the PIN (%v)", ErrPIN, token, err)
	case isCode(err, p11.CKR_PIN_LOCKED), isCode(err, p11.CKR_PIN_EXPIRED):
		return fmt.Errorf("%w: token %q: the PIN is locked or expired (%v)", ErrPIN, token, err)
	case isCode(err, p11.CKR_USER_PIN_NOT_INITIALIZED):
		return fmt.Errorf("%w: token %q has no user PIN yet (%v)", ErrToken, token, err)
	}
	return fmt.Errorf("pkcs11kms: log in to token %q: %w", token, err)
}

// isCode reports whether err is the PKCS#11 return value code.
func isCode(err error, code uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == code
}
