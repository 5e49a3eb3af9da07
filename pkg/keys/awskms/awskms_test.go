package awskms_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/keys/awskms"
	"github.com/custos-dev/custos/pkg/keys/keystest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRing(t *testing.T) {
	s := startServer(t)
	keystest.RunRing(t, func(t *testing.T) keys.Ring {
		return s.open(t, s.newAlias(), true)
	}, func(t *testing.T, r keys.Ring) keys.Ring {
		return s.open(t, r.(*awskms.Ring).Alias(), false)
	})
}

func dek(t *testing.T) []byte {
	t.Helper()
	b := bytes.Repeat([]byte{0x5a}, keys.DEKSize)
	b[0] = byte(time.Now().UnixNano())
	return b
}

// kmsID returns the KMS key id of a ring KeyID.
func kmsID(t *testing.T, keyID string) string {
	t.Helper()
	id, ok := strings.CutPrefix(keyID, awskms.KeyIDPrefix)
	if !ok || id == "" {
		t.Fatalf("KeyID %q does not start with %q", keyID, awskms.KeyIDPrefix)
	}
	return id
}

func TestOpenMissingAlias(t *testing.T) {
	s := startServer(t)
	alias := s.newAlias()
	_, err := awskms.Open(t.Context(), s.config(alias), false)
	if !errors.Is(err, awskms.ErrAliasNotFound) || !strings.Contains(err.Error(), alias) {
		t.Fatalf("Open without create on a missing alias: err = %v, want ErrAliasNotFound naming %s", err, alias)
	}
	// Nothing was created: the alias is still missing.
	if _, err := s.raw.DescribeKey(t.Context(), &kms.DescribeKeyInput{KeyId: aws.String(alias)}); err == nil {
		t.Fatal("Open without create made the alias")
	}
}

func TestOpenCreateTwiceKeepsTheKey(t *testing.T) {
	s := startServer(t)
	alias := s.newAlias()
	r1 := s.open(t, alias, true)
	r2 := s.open(t, alias, true)
	if r1.KeyID() != r2.KeyID() {
		t.Fatalf("second Open with create: active %s, want %s", r2.KeyID(), r1.KeyID())
	}
	w, err := r1.Wrap(t.Context(), dek(t), []byte("p01"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Unwrap(t.Context(), w, []byte("p01")); err != nil {
		t.Fatalf("Unwrap in the other ring: %v", err)
	}
}

func TestOpenBadAlias(t *testing.T) {
	for _, alias := range []string{"custos-kek", "alias/", "alias/aws/custos"} {
		if _, err := awskms.Open(t.Context(), awskms.Config{Region: testRegion, Alias: alias}, false); err == nil {
			t.Errorf("Open with alias %q: no error", alias)
		}
	}
}

// The keys carry the tags that scope IAM policies to the ring and link the versions.
func TestKeyLayout(t *testing.T) {
	s := startServer(t)
	ctx := t.Context()
	alias := s.newAlias()
	r := s.open(t, alias, true)
	old, cur, err := r.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tags := func(id string) map[string]string {
		out, err := s.raw.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: aws.String(id)})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, tg := range out.Tags {
			m[aws.ToString(tg.TagKey)] = aws.ToString(tg.TagValue)
		}
		return m
	}
	if got := tags(kmsID(t, old)); got[awskms.TagRing] != alias || got[awskms.TagPrevious] != "" {
		t.Fatalf("tags of the first version = %v", got)
	}
	if got := tags(kmsID(t, cur)); got[awskms.TagRing] != alias || got[awskms.TagPrevious] != kmsID(t, old) {
		t.Fatalf("tags of the second version = %v", got)
	}
	d, err := s.raw.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(alias)})
	if err != nil {
		t.Fatal(err)
	}
	md := d.KeyMetadata
	if aws.ToString(md.KeyId) != kmsID(t, cur) || md.KeySpec != types.KeySpecSymmetricDefault ||
		md.KeyUsage != types.KeyUsageTypeEncryptDecrypt {
		t.Fatalf("alias target = %s %s %s, want %s SYMMETRIC_DEFAULT ENCRYPT_DECRYPT",
			aws.ToString(md.KeyId), md.KeySpec, md.KeyUsage, kmsID(t, cur))
	}

	if _, err := r.DestroyRetired(ctx); err != nil {
		t.Fatal(err)
	}
	d, err = s.raw.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(kmsID(t, old))})
	if err != nil {
		t.Fatal(err)
	}
	md = d.KeyMetadata
	if md.KeyState != types.KeyStatePendingDeletion || md.Enabled || md.DeletionDate == nil {
		t.Fatalf("destroyed version: state %s, enabled %v", md.KeyState, md.Enabled)
	}
	if days := time.Until(*md.DeletionDate).Hours() / 24; days < awskms.PendingWindowDays-1 || days > awskms.PendingWindowDays+1 {
		t.Fatalf("deletion in %.1f days, want %d", days, awskms.PendingWindowDays)
	}
}

// A ciphertext made by KMS under the ring's key but with another encryption context does not
// open: not for another scope, and not without the "custos" domain entry.
func TestUnwrapWrongEncryptionContext(t *testing.T) {
	s := startServer(t)
	ctx := t.Context()
	r := s.open(t, s.newAlias(), true)
	d := dek(t)
	for _, ec := range []map[string]string{
		{"custos": "dek-v1", "scope": "p02"},
		{"scope": "p01"},
		{"custos": "dek-v2", "scope": "p01"},
		{"custos": "dek-v1", "scope": "p01", "extra": "x"},
		nil,
	} {
		out, err := s.raw.Encrypt(ctx, &kms.EncryptInput{
			KeyId: aws.String(kmsID(t, r.KeyID())), Plaintext: d, EncryptionContext: ec})
		if err != nil {
			t.Fatal(err)
		}
		w := append([]byte{0x03}, out.CiphertextBlob...)
		if _, err := r.Unwrap(ctx, w, []byte("p01")); !errors.Is(err, keys.ErrUnwrap) {
			t.Errorf("Unwrap of a ciphertext with context %v: err = %v, want ErrUnwrap", ec, err)
		}
	}
	// The right context opens, so the cases above failed on the context alone.
	out, err := s.raw.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(kmsID(t, r.KeyID())), Plaintext: d,
		EncryptionContext: map[string]string{"custos": "dek-v1", "scope": "p01"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Unwrap(ctx, append([]byte{0x03}, out.CiphertextBlob...), []byte("p01"))
	if err != nil || !bytes.Equal(got, d) {
		t.Fatalf("Unwrap with the right context: err = %v", err)
	}
}

func TestUnwrapRejectsFormat(t *testing.T) {
	s := startServer(t)
	ctx := t.Context()
	r := s.open(t, s.newAlias(), true)
	w, err := r.Wrap(ctx, dek(t), []byte("p01"))
	if err != nil {
		t.Fatal(err)
	}
	if w[0] != 0x03 {
		t.Fatalf("wrapped key starts with %#x, want 0x03", w[0])
	}
	for name, b := range map[string][]byte{
		"empty":         nil,
		"version only":  {0x03},
		"other version": append([]byte{0x01}, w[1:]...),
		"truncated":     w[:len(w)/2],
		"too long":      append(append([]byte{}, w...), make([]byte, 6145)...),
	} {
		if _, err := r.Unwrap(ctx, b, []byte("p01")); !errors.Is(err, keys.ErrUnwrap) {
			t.Errorf("Unwrap of %s: err = %v, want ErrUnwrap", name, err)
		}
	}
}

// An aad that is not UTF-8 is bound as hex under its own context key, so it cannot stand for
// the scope spelled by its hex digits.
func TestNonUTF8AAD(t *testing.T) {
	s := startServer(t)
	ctx := t.Context()
	r := s.open(t, s.newAlias(), true)
	d := dek(t)
	aad := []byte{0xff, 0xfe}
	w, err := r.Wrap(ctx, d, aad)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r.Unwrap(ctx, w, aad); err != nil || !bytes.Equal(got, d) {
		t.Fatalf("Unwrap with the same aad: err = %v", err)
	}
	if _, err := r.Unwrap(ctx, w, []byte("fffe")); !errors.Is(err, keys.ErrUnwrap) {
		t.Fatalf("Unwrap with the aad's hex as a scope: err = %v, want ErrUnwrap", err)
	}
}

// KMS decrypts for any key the caller may use; the ring opens only its own versions.
func TestUnwrapOtherRing(t *testing.T) {
	s := startServer(t)
	ctx := t.Context()
	a := s.open(t, s.newAlias(), true)
	b := s.open(t, s.newAlias(), true)
	w, err := a.Wrap(ctx, dek(t), []byte("p01"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Unwrap(ctx, w, []byte("p01")); !errors.Is(err, keys.ErrUnwrap) {
		t.Fatalf("Unwrap of another ring's key: err = %v, want ErrUnwrap", err)
	}
}

// A process that missed another's rotation must reopen before it rotates or destroys.
func TestStaleRing(t *testing.T) {
	s := startServer(t)
	ctx := t.Context()
	alias := s.newAlias()
	a := s.open(t, alias, true)
	b := s.open(t, alias, false)
	if _, _, err := a.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Rotate(ctx); !errors.Is(err, keys.ErrStaleKEK) {
		t.Fatalf("Rotate in a stale ring: err = %v, want ErrStaleKEK", err)
	}
	if _, err := b.DestroyRetired(ctx); !errors.Is(err, keys.ErrStaleKEK) {
		t.Fatalf("DestroyRetired in a stale ring: err = %v, want ErrStaleKEK", err)
	}
	// The stale ring still unwraps what the new version wrapped? No: it does not hold it yet,
	// and says so with ErrUnwrap rather than opening a key it does not know.
	w, err := a.Wrap(ctx, dek(t), []byte("p01"))
	if err != nil {
		t.Fatal(err)
	}
	if b.Holds(a.KeyID()) {
		t.Fatal("stale ring holds a version created after it opened")
	}
	if _, err := b.Unwrap(ctx, w, []byte("p01")); !errors.Is(err, keys.ErrUnwrap) {
		t.Fatalf("stale ring: Unwrap under a newer version: err = %v, want ErrUnwrap", err)
	}
	if got := s.open(t, alias, false).KeyID(); got != a.KeyID() {
		t.Fatalf("reopened ring: active %s, want %s", got, a.KeyID())
	}
}

// With the emulator down, Wrap and Unwrap fail with an error that is not ErrUnwrap: an outage
// is not a destroyed key.
func TestEmulatorDown(t *testing.T) {
	s := startServer(t)
	ctx := t.Context()
	r := s.open(t, s.newAlias(), true)
	d := dek(t)
	w, err := r.Wrap(ctx, d, []byte("p01"))
	if err != nil {
		t.Fatal(err)
	}
	s.proc.Stop()
	if _, err := r.Wrap(ctx, d, []byte("p01")); err == nil || errors.Is(err, keys.ErrUnwrap) {
		t.Fatalf("Wrap with KMS down: err = %v, want an error other than ErrUnwrap", err)
	} else if bytes.Contains([]byte(err.Error()), d) || strings.Contains(err.Error(), fmt.Sprintf("%x", d)) {
		t.Fatal("Wrap error contains the data key")
	}
	if _, err := r.Unwrap(ctx, w, []byte("p01")); err == nil || errors.Is(err, keys.ErrUnwrap) {
		t.Fatalf("Unwrap with KMS down: err = %v, want an error other than ErrUnwrap", err)
	}
	if err := s.proc.Start(); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Unwrap(ctx, w, []byte("p01")); err != nil || !bytes.Equal(got, d) {
		t.Fatalf("Unwrap after KMS is back: err = %v", err)
	}
}

func TestWrapRejectsSize(t *testing.T) {
	s := startServer(t)
	r := s.open(t, s.newAlias(), true)
	for _, n := range []int{0, 4097} {
		if _, err := r.Wrap(t.Context(), make([]byte, n), []byte("p01")); err == nil {
			t.Errorf("Wrap of %d bytes: no error", n)
		}
	}
}

func TestConfigStringHidesSecret(t *testing.T) {
	c := awskms.Config{Region: testRegion, AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI"}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), c.String()} {
		if strings.Contains(s, c.SecretAccessKey) || !strings.Contains(s, c.AccessKeyID) {
			t.Fatalf("formatted config %q shows the secret or hides the key id", s)
		}
	}
}
