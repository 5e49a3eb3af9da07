package keys_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/custos-dev/custos/pkg/keys"
)

func TestLoadOrCreateKeyFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keys", "custos.key")
	created, err := keys.LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	var f struct {
		Version      int    `json:"version"`
		KeyID        string `json:"key_id"`
		KEK          string `json:"kek"`
		PseudonymKey string `json:"pseudonym_key"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	kek, err1 := base64.StdEncoding.DecodeString(f.KEK)
	pk, err2 := base64.StdEncoding.DecodeString(f.PseudonymKey)
	sum := sha256.Sum256(kek)
	if f.Version != 1 || err1 != nil || err2 != nil || len(kek) != 32 || len(pk) != 32 ||
		f.KeyID != "local-"+hex.EncodeToString(sum[:4]) || created.KeyID() != f.KeyID {
		t.Fatalf("key file does not follow the format: version %d, key_id %q", f.Version, f.KeyID)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("temp files left behind: %d entries", len(entries))
	}

	// Loading again, or creating when it exists, gives the same keys.
	for _, load := range []func(string) (*keys.LocalKMS, error){keys.LoadKeyFile, keys.LoadOrCreateKeyFile} {
		k, err := load(path)
		if err != nil {
			t.Fatal(err)
		}
		if k.KeyID() != created.KeyID() || k.Pseudonym("t", "c") != created.Pseudonym("t", "c") {
			t.Fatal("reloaded key file gives other keys")
		}
		wrapped, _ := created.Wrap(context.Background(), []byte("dek"), []byte("s"))
		if got, err := k.Unwrap(context.Background(), wrapped, []byte("s")); err != nil || string(got) != "dek" {
			t.Fatalf("reloaded KMS cannot unwrap: %v", err)
		}
	}
}

func TestLoadOrCreateKeyFileRace(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "custos.key")
	const n = 8
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k, err := keys.LoadOrCreateKeyFile(path)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = k.KeyID()
		})
	}
	wg.Wait()
	for i := range n {
		if ids[i] != ids[0] {
			t.Fatalf("creators disagree: %q vs %q", ids[i], ids[0])
		}
	}
}

func TestLoadKeyFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := keys.LoadKeyFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: err = %v, want fs.ErrNotExist", err)
	}
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	sum := sha256.Sum256(bytes.Repeat([]byte{1}, 32))
	id := "local-" + hex.EncodeToString(sum[:4])
	for name, body := range map[string]string{
		"not json":     `{"version":1,"kek":"` + key,
		"empty":        ``,
		"version":      `{"version":2,"key_id":"` + id + `","kek":"` + key + `","pseudonym_key":"` + key + `"}`,
		"short kek":    `{"version":1,"key_id":"` + id + `","kek":"` + short + `","pseudonym_key":"` + key + `"}`,
		"short pkey":   `{"version":1,"key_id":"` + id + `","kek":"` + key + `","pseudonym_key":"` + short + `"}`,
		"no pkey":      `{"version":1,"key_id":"` + id + `","kek":"` + key + `"}`,
		"bad base64":   `{"version":1,"key_id":"` + id + `","kek":"!!` + key + `","pseudonym_key":"` + key + `"}`,
		"wrong key_id": `{"version":1,"key_id":"local-00000000","kek":"` + key + `","pseudonym_key":"` + key + `"}`,
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := keys.LoadKeyFile(path)
		if !errors.Is(err, keys.ErrKeyFile) {
			t.Errorf("%s: err = %v, want ErrKeyFile", name, err)
		} else if strings.Contains(err.Error(), key[:8]) {
			t.Errorf("%s: error message holds key material", name)
		}
		// An existing but broken file is never replaced by fresh keys.
		if _, err := keys.LoadOrCreateKeyFile(path); !errors.Is(err, keys.ErrKeyFile) {
			t.Errorf("%s: LoadOrCreateKeyFile err = %v, want ErrKeyFile", name, err)
		}
	}
}

func TestWrapUnwrap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kms := testKMS(t)
	dek := bytes.Repeat([]byte{9}, 32)
	aad := []byte("p0123")
	wrapped, err := kms.Wrap(ctx, dek, aad)
	if err != nil {
		t.Fatal(err)
	}
	if len(wrapped) != 1+12+32+16 || wrapped[0] != 0x01 {
		t.Fatalf("wrapped: %d bytes, version %#x", len(wrapped), wrapped[0])
	}
	if again, _ := kms.Wrap(ctx, dek, aad); bytes.Equal(again, wrapped) {
		t.Fatal("wrapping twice gave the same bytes: nonce not random")
	}
	got, err := kms.Unwrap(ctx, wrapped, aad)
	if err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("Unwrap: %v", err)
	}

	bad := map[string][]byte{"empty": nil, "truncated": wrapped[:len(wrapped)-1]}
	for i := range wrapped {
		c := bytes.Clone(wrapped)
		c[i] ^= 0x80
		bad[fmt.Sprintf("flip byte %d", i)] = c
	}
	for name, w := range bad {
		if _, err := kms.Unwrap(ctx, w, aad); !errors.Is(err, keys.ErrUnwrap) {
			t.Errorf("%s: err = %v, want ErrUnwrap", name, err)
		}
	}
	if _, err := kms.Unwrap(ctx, wrapped, []byte("p0124")); !errors.Is(err, keys.ErrUnwrap) {
		t.Errorf("other scope: err = %v, want ErrUnwrap", err)
	}
	if _, err := testKMS(t).Unwrap(ctx, wrapped, aad); !errors.Is(err, keys.ErrUnwrap) {
		t.Errorf("other KEK: err = %v, want ErrUnwrap", err)
	}
}

// TestPseudonym recomputes the pseudonym from the spec with crypto/hmac directly.
func TestPseudonym(t *testing.T) {
	t.Parallel()
	pk := bytes.Repeat([]byte{2}, 32)
	kms, err := keys.NewLocalKMS(bytes.Repeat([]byte{1}, 32), pk)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, pk)
	m.Write([]byte("custos-pseudonym-v1\x00\x04acme\x00\x09cust-0042"))
	want := "p" + hex.EncodeToString(m.Sum(nil)[:16])
	got := kms.Pseudonym("acme", "cust-0042")
	if got != want {
		t.Fatalf("Pseudonym = %s, want %s", got, want)
	}
	for range 3 { // later calls reuse a keyed HMAC: it must be reset to the key, not carry state
		kms.Pseudonym("acme", "cust-0043")
		if again := kms.Pseudonym("acme", "cust-0042"); again != want {
			t.Fatalf("Pseudonym again = %s, want %s", again, want)
		}
	}
	if !regexp.MustCompile(`^p[0-9a-f]{32}$`).MatchString(got) || keys.ValidateScope(got) != nil {
		t.Fatalf("pseudonym %q is not a valid scope", got)
	}
	for _, other := range []string{kms.Pseudonym("acme", "cust-0043"), kms.Pseudonym("acm", "ecust-0042"), kms.Pseudonym("", "acmecust-0042")} {
		if other == got {
			t.Fatal("distinct customers share a pseudonym")
		}
	}
}
