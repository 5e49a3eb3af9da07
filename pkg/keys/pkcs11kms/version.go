package pkcs11kms

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	p11 "github.com/miekg/pkcs11"
)

const (
	// idSize is the length of the random CKA_ID of a new version.
	idSize = 16
	// versionDigits is the width of the version number in CKA_LABEL.
	versionDigits = 6
	maxVersion    = 999_999
)

// version is one KEK version: a key object on the token.
type version struct {
	num   int
	id    []byte // CKA_ID
	keyID string
	label string
	// handle is the object's handle in this process, guarded by Ring.mu: it is looked up again
	// by CKA_ID if the token stops accepting it.
	handle p11.ObjectHandle
}

// versions is what a scan of the token found: every version, in ascending order; the last is
// active. A versions value is never changed after the scan, but for the handles.
type versions []*version

func (vs versions) active() *version {
	if len(vs) == 0 {
		return nil
	}
	return vs[len(vs)-1]
}

func (vs versions) byID(id []byte) *version {
	for _, v := range vs {
		if string(v.id) == string(id) {
			return v
		}
	}
	return nil
}

func (vs versions) byKeyID(keyID string) *version {
	for _, v := range vs {
		if v.keyID == keyID {
			return v
		}
	}
	return nil
}

func (vs versions) retiredIDs() []string {
	var ids []string
	for _, v := range vs[:max(len(vs)-1, 0)] {
		ids = append(ids, v.keyID)
	}
	return ids
}

func keyID(id []byte) string { return "p11-" + hex.EncodeToString(id) }

func versionLabel(prefix string, num int) string {
	return fmt.Sprintf("%s-%0*d", prefix, versionDigits, num)
}

// parseLabel returns the version number of a label "<prefix>-NNNNNN", or false for any other
// label.
func parseLabel(prefix, label string) (int, bool) {
	rest, ok := strings.CutPrefix(label, prefix+"-")
	if !ok || len(rest) != versionDigits || strings.TrimLeft(rest, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil && n >= 1
}

// secretKeys is the template every KEK version matches.
func secretKeys() []*p11.Attribute {
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_TOKEN, true),
	}
}

// scan reads every KEK version under prefix from the token. A malformed version (wrong size,
// extractable, a number or CKA_ID used twice) is an error, never skipped: guessing which of two
// objects is the KEK could wrap under the wrong one.
func scan(ctx *p11.Ctx, sh p11.SessionHandle, token, prefix string) (versions, error) {
	handles, err := findObjects(ctx, sh, secretKeys())
	if err != nil {
		return nil, fmt.Errorf("pkcs11kms: find keys on token %q: %w", token, err)
	}
	var vs versions
	for _, h := range handles {
		// The label first: other objects on a shared token need not have the attributes below.
		attrs, err := ctx.GetAttributeValue(sh, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_LABEL, nil)})
		if isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
			continue // destroyed since the search
		}
		if err != nil {
			return nil, fmt.Errorf("pkcs11kms: read key label on token %q: %w", token, err)
		}
		label := string(attrs[0].Value)
		num, ok := parseLabel(prefix, label)
		if !ok {
			continue
		}
		attrs, err = ctx.GetAttributeValue(sh, h, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_LABEL, nil),
			p11.NewAttribute(p11.CKA_ID, nil),
			p11.NewAttribute(p11.CKA_VALUE_LEN, nil),
			p11.NewAttribute(p11.CKA_SENSITIVE, nil),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
		})
		if isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pkcs11kms: read attributes of %q on token %q: %w", label, token, err)
		}
		id := attrs[1].Value
		switch {
		case len(id) == 0 || len(id) > 255:
			return nil, fmt.Errorf("%w: %q on token %q: CKA_ID must be 1 to 255 bytes", ErrObject, label, token)
		case ulong(attrs[2].Value) != 32:
			return nil, fmt.Errorf("%w: %q on token %q: not an AES-256 key", ErrObject, label, token)
		case !boolAttr(attrs[3].Value) || boolAttr(attrs[4].Value):
			return nil, fmt.Errorf("%w: %q on token %q: must be sensitive and non-extractable", ErrObject, label, token)
		}
		vs = append(vs, &version{num: num, id: slices.Clone(id), keyID: keyID(id), label: label, handle: h})
	}
	slices.SortFunc(vs, func(a, b *version) int { return a.num - b.num })
	for i := 1; i < len(vs); i++ {
		if vs[i].num == vs[i-1].num {
			return nil, fmt.Errorf("%w: two objects labelled %q on token %q", ErrObject, vs[i].label, token)
		}
	}
	for i, v := range vs {
		for _, w := range vs[i+1:] {
			if string(v.id) == string(w.id) {
				return nil, fmt.Errorf("%w: %q and %q on token %q share a CKA_ID", ErrObject, v.label, w.label, token)
			}
		}
	}
	return vs, nil
}

// findObjects returns the handles of every object matching tmpl.
func findObjects(ctx *p11.Ctx, sh p11.SessionHandle, tmpl []*p11.Attribute) ([]p11.ObjectHandle, error) {
	if err := ctx.FindObjectsInit(sh, tmpl); err != nil {
		return nil, err
	}
	var all []p11.ObjectHandle
	for {
		hs, _, err := ctx.FindObjects(sh, 64)
		if err != nil {
			_ = ctx.FindObjectsFinal(sh)
			return nil, err
		}
		if len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	return all, ctx.FindObjectsFinal(sh)
}

// generate creates version num with a random CKA_ID not used by vs.
func generate(ctx *p11.Ctx, sh p11.SessionHandle, token, prefix string, num int, vs versions) error {
	if num > maxVersion {
		return fmt.Errorf("pkcs11kms: token %q: KEK version %d exceeds %d", token, num, maxVersion)
	}
	id := make([]byte, idSize)
	for {
		if _, err := rand.Read(id); err != nil {
			return fmt.Errorf("pkcs11kms: generate key id: %w", err)
		}
		if vs.byID(id) == nil {
			break
		}
	}
	label := versionLabel(prefix, num)
	_, err := ctx.GenerateKey(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, append(secretKeys(),
		p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, true),
		p11.NewAttribute(p11.CKA_DECRYPT, true),
		p11.NewAttribute(p11.CKA_WRAP, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
	))
	if err != nil {
		return fmt.Errorf("pkcs11kms: generate %q on token %q: %w", label, token, err)
	}
	return nil
}

// findHandle looks the object of v up again by its label and CKA_ID; ok is false when it is
// gone from the token.
func findHandle(ctx *p11.Ctx, sh p11.SessionHandle, v *version) (p11.ObjectHandle, bool, error) {
	hs, err := findObjects(ctx, sh, append(secretKeys(),
		p11.NewAttribute(p11.CKA_LABEL, v.label), p11.NewAttribute(p11.CKA_ID, v.id)))
	if err != nil || len(hs) != 1 {
		return 0, false, err
	}
	return hs[0], true, nil
}

// ulong decodes a CK_ULONG attribute, which has the platform's size and byte order.
func ulong(b []byte) uint64 {
	switch len(b) {
	case 8:
		return binary.NativeEndian.Uint64(b)
	case 4:
		return uint64(binary.NativeEndian.Uint32(b))
	}
	return 0
}

func boolAttr(b []byte) bool { return len(b) == 1 && b[0] != 0 }
