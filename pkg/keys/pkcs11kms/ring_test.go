package pkcs11kms_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/keys/keystest"
	"github.com/custos-dev/custos/pkg/keys/pkcs11kms"
)

const (
	userPIN = "1234"
	soPIN   = "5678"
	// helperEnv makes the test binary act as another process using the token (see runHelper).
	helperEnv = "CUSTOS_PKCS11KMS_HELPER"
)

// TestMain points SoftHSM2 at a token directory of this run. SOFTHSM2_CONF is read by the
// library when it is loaded, once per process, so it is set here, before any test; each test
// initializes tokens of its own in it.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	dir, err := os.MkdirTemp("", "custos-softhsm-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	tokens := filepath.Join(dir, "tokens")
	err = os.Mkdir(tokens, 0o700)
	if err == nil {
		err = os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("SOFTHSM2_CONF", conf)
	// The token of ExampleOpen. Without SoftHSM2 every test fails, saying to install it.
	if module := findModule(); module != "" {
		if err := pkcs11kms.InitToken(module, "custos", soPIN, userPIN); err != nil {
			fmt.Fprintln(os.Stderr, "initialize the example's token:", err)
			os.Exit(1)
		}
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// softhsmModule returns the path of the SoftHSM2 PKCS#11 module, failing the test when it is
// not installed.
func softhsmModule(t testing.TB) string {
	t.Helper()
	module := findModule()
	if module == "" {
		t.Fatalf("SoftHSM2 is not installed (no libsofthsm2.so in %s): run `make emulators`", strings.Join(modulePaths, ", "))
	}
	return module
}

var modulePaths = []string{"/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"}

// findModule returns the path of the SoftHSM2 PKCS#11 module, or "".
func findModule() string {
	more, _ := filepath.Glob("/usr/lib/*/softhsm/libsofthsm2.so")
	for _, p := range append(slices.Clone(modulePaths), more...) {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

var tokenSeq atomic.Int64

// newToken initializes a fresh token with its own label and returns the config to reach it.
func newToken(t testing.TB) pkcs11kms.Config {
	t.Helper()
	module := softhsmModule(t)
	label := fmt.Sprintf("custos-test-%04d", tokenSeq.Add(1))
	if err := pkcs11kms.InitToken(module, label, soPIN, userPIN); err != nil {
		t.Fatalf("initialize SoftHSM2 token %s: %v", label, err)
	}
	return pkcs11kms.Config{Module: module, TokenLabel: label, PIN: userPIN}
}

func open(t testing.TB, cfg pkcs11kms.Config, create bool) *pkcs11kms.Ring {
	t.Helper()
	r, err := pkcs11kms.Open(context.Background(), cfg, create)
	if err != nil {
		t.Fatalf("Open(create=%v): %v", create, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func newDEK(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRing(t *testing.T) {
	t.Parallel()
	var configs sync.Map // keys.Ring → pkcs11kms.Config
	keystest.RunRing(t, func(t *testing.T) keys.Ring {
		cfg := newToken(t)
		r := open(t, cfg, true)
		configs.Store(keys.Ring(r), cfg)
		return r
	}, func(t *testing.T, r keys.Ring) keys.Ring {
		cfg, ok := configs.Load(r)
		if !ok {
			t.Fatal("reopen: ring not made by newRing")
		}
		return open(t, cfg.(pkcs11kms.Config), false)
	})
}

func TestOpenWrongPIN(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := newToken(t)
	bad := cfg
	bad.PIN = "wrong-pin-7311"
	_, err := pkcs11kms.Open(ctx, bad, true)
	if !errors.Is(err, pkcs11kms.ErrPIN) || !strings.Contains(err.Error(), cfg.TokenLabel) {
		t.Fatalf("Open with a wrong PIN: err = %v, want ErrPIN naming the token", err)
	}
	if strings.Contains(err.Error(), bad.PIN) {
		t.Fatalf("error message carries the PIN: %v", err)
	}
	r := open(t, cfg, true)
	// The process is now logged in to the token; the wrong PIN must still be refused.
	if _, err := pkcs11kms.Open(ctx, bad, false); !errors.Is(err, pkcs11kms.ErrPIN) {
		t.Fatalf("Open with a wrong PIN beside a logged-in ring: err = %v, want ErrPIN", err)
	}
	if o := open(t, cfg, false); o.KeyID() != r.KeyID() {
		t.Fatalf("second ring: active %s, want %s", o.KeyID(), r.KeyID())
	}
}

func TestOpenEmptyTokenWithoutCreate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := newToken(t)
	if _, err := pkcs11kms.Open(ctx, cfg, false); !errors.Is(err, pkcs11kms.ErrNoKEK) ||
		!strings.Contains(err.Error(), "custos-kek-000001") {
		t.Fatalf("Open without create on an empty token: err = %v, want ErrNoKEK naming the label", err)
	}
	r := open(t, cfg, true)
	if !strings.HasPrefix(r.KeyID(), "p11-") || len(r.KeyID()) != len("p11-")+32 {
		t.Fatalf("KeyID = %q, want p11- and 32 hex digits", r.KeyID())
	}
	if o := open(t, cfg, false); o.KeyID() != r.KeyID() {
		t.Fatalf("Open without create after create: active %s, want %s", o.KeyID(), r.KeyID())
	}
	if o := open(t, cfg, true); o.KeyID() != r.KeyID() {
		t.Fatalf("Open with create on a token with a KEK made another version: %s, want %s", o.KeyID(), r.KeyID())
	}
}

func TestKeyNotExtractable(t *testing.T) {
	t.Parallel()
	r := open(t, newToken(t), true)
	sensitive, extractable, n, valueErr, err := r.ActiveKeyAttributes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !sensitive || extractable {
		t.Fatalf("CKA_SENSITIVE = %v, CKA_EXTRACTABLE = %v; want true, false", sensitive, extractable)
	}
	if valueErr == nil {
		t.Fatalf("C_GetAttributeValue(CKA_VALUE) succeeded and read %d bytes of the KEK", n)
	}
	t.Logf("reading CKA_VALUE: %v", valueErr)
}

func TestOpenConfigErrors(t *testing.T) {
	t.Parallel()
	module := softhsmModule(t)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		cfg  pkcs11kms.Config
		want error
	}{
		{"no module", pkcs11kms.Config{TokenLabel: "x", PIN: userPIN}, nil},
		{"no token label", pkcs11kms.Config{Module: module, PIN: userPIN}, nil},
		{"long token label", pkcs11kms.Config{Module: module, TokenLabel: strings.Repeat("x", 33), PIN: userPIN}, nil},
		{"no PIN", pkcs11kms.Config{Module: module, TokenLabel: "x"}, nil},
		{"missing module", pkcs11kms.Config{Module: filepath.Join(t.TempDir(), "nope.so"), TokenLabel: "x", PIN: userPIN}, os.ErrNotExist},
		{"not a module", pkcs11kms.Config{Module: "/etc/hostname", TokenLabel: "x", PIN: userPIN}, nil},
		{"unknown token", pkcs11kms.Config{Module: module, TokenLabel: "no-such-token", PIN: userPIN}, pkcs11kms.ErrToken},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := pkcs11kms.Open(ctx, c.cfg, true)
			if err == nil {
				r.Close()
				t.Fatal("Open succeeded")
			}
			t.Logf("%v", err)
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}

func TestWrappedFormat(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := newToken(t)
	r := open(t, cfg, true)
	for _, n := range []int{1, 16, 17, keys.DEKSize, 64, 1000} {
		dek := newDEK(t, n)
		w, err := r.Wrap(ctx, dek, []byte("p01"))
		if err != nil {
			t.Fatalf("Wrap %d bytes: %v", n, err)
		}
		if len(w) != 2+16+12+n+16 || w[0] != 0x02 || w[1] != 16 || "p11-"+hex.EncodeToString(w[2:18]) != r.KeyID() {
			t.Fatalf("wrapped %d bytes: % x; want 0x02 ‖ 16 ‖ CKA_ID of %s ‖ iv ‖ ct ‖ tag", n, w[:min(len(w), 18)], r.KeyID())
		}
		if got, err := r.Unwrap(ctx, w, []byte("p01")); err != nil || !bytes.Equal(got, dek) {
			t.Fatalf("Unwrap %d bytes: err = %v, same = %v", n, err, bytes.Equal(got, dek))
		}
	}
	if _, err := r.Wrap(ctx, nil, []byte("p01")); err == nil {
		t.Fatal("Wrap of an empty key succeeded")
	}
	w, err := r.Wrap(ctx, newDEK(t, keys.DEKSize), nil)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := r.Wrap(ctx, newDEK(t, keys.DEKSize), nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(w[18:30], w2[18:30]) {
		t.Fatal("two wraps used the same IV")
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"format byte":      func(b []byte) []byte { b[0] = 0x01; return b },
		"id length zero":   func(b []byte) []byte { b[1] = 0; return b },
		"id length longer": func(b []byte) []byte { b[1] = 17; return b },
		"unknown id":       func(b []byte) []byte { b[5] ^= 1; return b },
		"iv":               func(b []byte) []byte { b[20] ^= 1; return b },
		"ciphertext":       func(b []byte) []byte { b[31] ^= 1; return b },
		"truncated tag":    func(b []byte) []byte { return b[:len(b)-1] },
		"appended byte":    func(b []byte) []byte { return append(b, 0) },
		"only header":      func(b []byte) []byte { return b[:30] },
		"empty":            func(b []byte) []byte { return nil },
	} {
		if _, err := r.Unwrap(ctx, mutate(slices.Clone(w)), nil); !errors.Is(err, keys.ErrUnwrap) {
			t.Fatalf("Unwrap with a modified %s: err = %v, want ErrUnwrap", name, err)
		}
	}
	// Another ring on the same token under another prefix holds other keys.
	cfg.LabelPrefix = "other"
	other := open(t, cfg, true)
	if _, err := other.Unwrap(ctx, w, nil); !errors.Is(err, keys.ErrUnwrap) {
		t.Fatalf("Unwrap by a ring of another prefix: err = %v, want ErrUnwrap", err)
	}
}

// TestInvalidObjects checks that key objects under the prefix that are not proper KEK versions
// stop Open and Rotate instead of being used or skipped.
func TestInvalidObjects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, c := range []struct {
		name        string
		label       string
		extractable bool
		want        string
	}{
		{"extractable", "custos-kek-000002", true, "non-extractable"},
		{"label taken twice", "custos-kek-000001", false, "two objects"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := newToken(t)
			r := open(t, cfg, true)
			if err := r.GenerateRawKey(ctx, c.label, newDEK(t, 8), c.extractable); err != nil {
				t.Fatal(err)
			}
			_, err := pkcs11kms.Open(ctx, cfg, false)
			if !errors.Is(err, pkcs11kms.ErrObject) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Open: err = %v, want ErrObject saying %q", err, c.want)
			}
			if _, _, err := r.Rotate(ctx); !errors.Is(err, pkcs11kms.ErrObject) {
				t.Fatalf("Rotate: err = %v, want ErrObject", err)
			}
			// Objects outside the prefix's label form are another program's business.
			cfg.LabelPrefix = "custos-kek-0"
			if _, err := pkcs11kms.Open(ctx, cfg, false); !errors.Is(err, pkcs11kms.ErrNoKEK) {
				t.Fatalf("Open under another prefix: err = %v, want ErrNoKEK", err)
			}
		})
	}
}

// TestLabelPrefixes checks that rings under prefixes that extend one another ("custos-kek" and
// "custos-kek-staging") share a token without seeing each other's versions.
func TestLabelPrefixes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := newToken(t)
	a := open(t, cfg, true)
	staging := cfg
	staging.LabelPrefix = "custos-kek-staging"
	b := open(t, staging, true)
	if a.KeyID() == b.KeyID() {
		t.Fatal("two prefixes share a KEK")
	}
	for range 2 {
		if _, _, err := b.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if ret, err := a.Retired(ctx); err != nil || len(ret) != 0 {
		t.Fatalf("Retired of the default prefix after rotating the other = %v, %v", ret, err)
	}
	if gone, err := b.DestroyRetired(ctx); err != nil || len(gone) != 2 {
		t.Fatalf("DestroyRetired = %v, %v; want 2 versions", gone, err)
	}
	if !a.Holds(a.KeyID()) || open(t, cfg, false).KeyID() != a.KeyID() {
		t.Fatal("destroying the other prefix's versions touched this one")
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := open(t, newToken(t), true)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Go(func() {
			aad := []byte(fmt.Sprintf("p%02d", g))
			for range 25 {
				dek := make([]byte, keys.DEKSize)
				rand.Read(dek)
				w, err := r.Wrap(ctx, dek, aad)
				if err != nil {
					errs <- err
					return
				}
				got, err := r.Unwrap(ctx, w, aad)
				if err != nil || !bytes.Equal(got, dek) {
					errs <- fmt.Errorf("unwrap: err = %v, same = %v", err, bytes.Equal(got, dek))
					return
				}
			}
		})
	}
	// A rotation while keys are wrapped and unwrapped: the retired version still unwraps.
	wg.Go(func() {
		if _, _, err := r.Rotate(ctx); err != nil {
			errs <- err
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, err := pkcs11kms.Open(ctx, newToken(t), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := r.Wrap(ctx, newDEK(t, keys.DEKSize), nil); !errors.Is(err, pkcs11kms.ErrClosed) {
		t.Fatalf("Wrap after Close: err = %v, want ErrClosed", err)
	}
}

// TestOtherProcess checks the token's state from another process: it sees a rotation made
// here, opens a key wrapped by a retired version, and no longer opens it once DestroyRetired
// has run here.
func TestOtherProcess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := newToken(t)
	r := open(t, cfg, true)
	dek := newDEK(t, keys.DEKSize)
	w, err := r.Wrap(ctx, dek, []byte("p01"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("active %s unwrap %x", r.KeyID(), dek)
	if got := helper(t, cfg, w, "p01"); got != want {
		t.Fatalf("other process: %q, want %q", got, want)
	}
	if _, err := r.DestroyRetired(ctx); err != nil {
		t.Fatal(err)
	}
	want = fmt.Sprintf("active %s unwrap failed", r.KeyID())
	if got := helper(t, cfg, w, "p01"); got != want {
		t.Fatalf("other process after DestroyRetired: %q, want %q", got, want)
	}
}

// helper runs the test binary as another process that opens the token and unwraps w.
func helper(t *testing.T, cfg pkcs11kms.Config, w []byte, aad string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1",
		"HELPER_MODULE="+cfg.Module, "HELPER_TOKEN="+cfg.TokenLabel, "HELPER_PIN="+cfg.PIN,
		"HELPER_WRAPPED="+hex.EncodeToString(w), "HELPER_AAD="+aad)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// runHelper is the other process of TestOtherProcess.
func runHelper() int {
	ctx := context.Background()
	r, err := pkcs11kms.Open(ctx, pkcs11kms.Config{Module: os.Getenv("HELPER_MODULE"),
		TokenLabel: os.Getenv("HELPER_TOKEN"), PIN: os.Getenv("HELPER_PIN")}, false)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer r.Close()
	w, err := hex.DecodeString(os.Getenv("HELPER_WRAPPED"))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	dek, err := r.Unwrap(ctx, w, []byte(os.Getenv("HELPER_AAD")))
	switch {
	case errors.Is(err, keys.ErrUnwrap):
		fmt.Printf("active %s unwrap failed\n", r.KeyID())
	case err != nil:
		fmt.Println(err)
		return 1
	default:
		fmt.Printf("active %s unwrap %x\n", r.KeyID(), dek)
	}
	return 0
}
