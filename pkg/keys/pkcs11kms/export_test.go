package pkcs11kms

import (
	"context"
	"fmt"
	"sync"

	p11 "github.com/miekg/pkcs11"
)

// initTokenMu serializes InitToken: every call takes the one free slot.
var initTokenMu sync.Mutex

// InitToken initializes a token in the module's free slot and sets its user PIN, through the
// library this process already loaded: SoftHSM2 reads its token directory at C_Initialize, so
// a token made by softhsm2-util would stay unseen while any ring of the test process is open.
func InitToken(module, label, soPIN, pin string) error {
	initTokenMu.Lock()
	defer initTokenMu.Unlock()
	m, err := loadModule(module)
	if err != nil {
		return err
	}
	defer m.release()
	slots, err := m.ctx.GetSlotList(true)
	if err != nil {
		return err
	}
	for _, s := range slots {
		ti, err := m.ctx.GetTokenInfo(s)
		if err != nil || ti.Flags&p11.CKF_TOKEN_INITIALIZED != 0 {
			continue
		}
		if err := m.ctx.InitToken(s, soPIN, label); err != nil {
			return fmt.Errorf("init token: %w", err)
		}
		sh, err := m.ctx.OpenSession(s, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
		if err != nil {
			return err
		}
		defer m.ctx.CloseSession(sh)
		if err := m.ctx.Login(sh, p11.CKU_SO, soPIN); err != nil {
			return fmt.Errorf("log in as SO: %w", err)
		}
		if err := m.ctx.InitPIN(sh, pin); err != nil {
			return fmt.Errorf("init user PIN: %w", err)
		}
		return m.ctx.Logout(sh)
	}
	return fmt.Errorf("no free slot in %s", module)
}

// ActiveKeyAttributes reads the active version's CKA_SENSITIVE and CKA_EXTRACTABLE, then
// tries to read its CKA_VALUE: valueLen is the length read and valueErr the token's answer.
func (r *Ring) ActiveKeyAttributes(ctx context.Context) (sensitive, extractable bool, valueLen int, valueErr, err error) {
	v := r.versions().active()
	err = r.withKey(ctx, v, func(sh p11.SessionHandle, h p11.ObjectHandle) error {
		attrs, err := r.m.ctx.GetAttributeValue(sh, h, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_SENSITIVE, nil), p11.NewAttribute(p11.CKA_EXTRACTABLE, nil)})
		if err != nil {
			return err
		}
		sensitive, extractable = boolAttr(attrs[0].Value), boolAttr(attrs[1].Value)
		value, verr := r.m.ctx.GetAttributeValue(sh, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
		if verr == nil {
			valueLen = len(value[0].Value)
		}
		valueErr = verr
		return nil
	})
	return sensitive, extractable, valueLen, valueErr, err
}

// GenerateRawKey generates an AES-256 key object labelled label on the ring's token, as an
// operator or another program might, bypassing the checks of Rotate.
func (r *Ring) GenerateRawKey(ctx context.Context, label string, id []byte, extractable bool) error {
	return r.pool.do(ctx, func(sh p11.SessionHandle) error {
		_, err := r.m.ctx.GenerateKey(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, append(secretKeys(),
			p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
			p11.NewAttribute(p11.CKA_LABEL, label),
			p11.NewAttribute(p11.CKA_ID, id),
			p11.NewAttribute(p11.CKA_PRIVATE, true),
			p11.NewAttribute(p11.CKA_SENSITIVE, !extractable),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, extractable),
			p11.NewAttribute(p11.CKA_ENCRYPT, true),
			p11.NewAttribute(p11.CKA_DECRYPT, true),
		))
		return err
	})
}
