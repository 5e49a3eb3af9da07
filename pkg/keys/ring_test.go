package keys_test

import (
	"path/filepath"
	"testing"

	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/keys/keystest"
)

func TestFileRing(t *testing.T) {
	keystest.RunRing(t, func(t *testing.T) keys.Ring {
		r, err := keys.OpenFileRing(filepath.Join(t.TempDir(), "keys.json"), true)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}, func(t *testing.T, r keys.Ring) keys.Ring {
		o, err := keys.OpenFileRing(r.(*keys.FileRing).Path(), false)
		if err != nil {
			t.Fatal(err)
		}
		return o
	})
}

func TestLoadPseudonyms(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "keys.json")
	r, err := keys.OpenFileRing(full, true)
	if err != nil {
		t.Fatal(err)
	}
	p, err := keys.LoadPseudonyms(full, false)
	if err != nil {
		t.Fatal(err)
	}
	if p.Pseudonym("t", "c") != r.LocalKMS().Pseudonym("t", "c") || p.Fingerprint() != r.LocalKMS().Fingerprint() {
		t.Fatal("pseudonyms read from a full key file differ from the ring's")
	}
	only := filepath.Join(dir, "pseudonyms.json")
	p1, err := keys.LoadPseudonyms(only, true)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := keys.LoadPseudonyms(only, true)
	if err != nil || p1.Pseudonym("t", "c") != p2.Pseudonym("t", "c") {
		t.Fatalf("second load: err = %v, or another key", err)
	}
	if _, err := keys.OpenFileRing(only, false); err == nil {
		t.Fatal("a pseudonym-only key file opened as a KEK ring")
	}
}
