// Package kms runs the whole pipeline on each KEK backend: back up, rotate the KEK twice (with
// new backups in between), destroy the retired versions, and restore byte-identical, through
// the broker and from one target alone. The backends are real: the key file, SoftHSM2 over
// PKCS#11, and local-kms speaking the AWS KMS API.
package kms

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/devstack"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/restore"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
	"github.com/custos-dev/custos/tests/harness"
)

const tenant = "shop"

// backend makes the keys section (and environment) of one KEK backend.
type backend struct {
	name  string
	setup func(t *testing.T, dir string) (keysYAML string, env []string)
}

var backends = []backend{
	{"file", func(t *testing.T, dir string) (string, []string) {
		return "keys:\n  file: custos.key\n  create: true\n", nil
	}},
	{"pkcs11", func(t *testing.T, dir string) (string, []string) {
		const pin = "4711-custos"
		module, env, err := devstack.InitSoftHSMToken(filepath.Join(dir, "hsm"), "custos", pin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "hsm.pin"), []byte(pin+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("keys:\n  file: custos.key\n  create: true\n  backend: pkcs11\n  pkcs11:\n    module: %s\n    token_label: custos\n    pin_file: hsm.pin\n", module), env
	}},
	{"aws_kms", func(t *testing.T, dir string) (string, []string) {
		k, err := devstack.StartKMS(context.Background(), filepath.Join(dir, "kms"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Stop)
		return fmt.Sprintf("keys:\n  file: custos.key\n  create: true\n  backend: aws_kms\n  aws_kms:\n    endpoint: %s\n    region: us-east-1\n", k.Endpoint), k.Env
	}},
}

func TestRoundTripAcrossRotations(t *testing.T) {
	bin, err := harness.WorkerBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := harness.CLIBinary(); err != nil {
		t.Fatal(err)
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			dir := t.TempDir()
			keysYAML, env := be.setup(t, dir)
			for _, kv := range env { // the test process opens the backend too
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			stack, err := harness.Start(dir, harness.Options{Targets: 2, Keys: keysYAML, Env: env})
			if err != nil {
				t.Fatal(err)
			}
			defer stack.Close()
			ctx := context.Background()
			want := map[string][]byte{}
			p, err := producer.New(stack.JS, "urn:test:kms")
			if err != nil {
				t.Fatal(err)
			}
			publish := func(round int, customers ...string) {
				t.Helper()
				for _, c := range customers {
					data := []byte(fmt.Sprintf(`{"customer":%q,"round":%d,"pad":%q}`, c, round, strings.Repeat("x", 100*round)))
					key := fmt.Sprintf("orders/%d", round)
					ev := &custosv1.PostTransaction{
						Meta:   &custosv1.Meta{Time: timestamppb.Now(), Tenant: tenant, CustomerId: c, DataClass: "critical"},
						Record: &custosv1.Record{Key: key, ContentType: "application/json", Source: &custosv1.Record_Inline{Inline: data}},
					}
					if _, err := p.PublishPostTransaction(ctx, ev); err != nil {
						t.Fatal(err)
					}
					want[c+"/"+key] = data
				}
			}
			settle := func(w *harness.Worker) {
				t.Helper()
				if err := stack.WaitSettled(ctx, time.Minute); err != nil {
					t.Fatalf("%v\nworker log:\n%s", err, readLog(w))
				}
			}
			cli := func(args ...string) string {
				t.Helper()
				out, err := stack.CLI(args...)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}

			w, err := stack.StartWorker(bin, "w1")
			if err != nil {
				t.Fatal(err)
			}
			defer w.Kill()
			publish(1, "alice", "bob", "carol")
			settle(w)

			// Two rotations, each followed by a restart of the worker and new backups: new
			// customers get keys under the new KEK, old ones keep theirs (re-wrapped).
			var actives []string
			for round := 2; round <= 3; round++ {
				out := cli("keys", "rotate")
				m := regexp.MustCompile(`active=(\S+) live=(\d+) rewrapped=(\d+) envelopes=(\d+) failures=0`).FindStringSubmatch(out)
				if m == nil {
					t.Fatalf("keys rotate printed %q", out)
				}
				actives = append(actives, m[1])
				if err := w.Stop(30 * time.Second); err != nil {
					t.Fatal(err)
				}
				if w, err = stack.StartWorker(bin, fmt.Sprintf("w%d", round)); err != nil {
					t.Fatal(err)
				}
				defer w.Kill()
				publish(round, "alice", fmt.Sprintf("dave%d", round))
				settle(w)
			}
			if actives[0] == actives[1] {
				t.Fatalf("two rotations gave the same active KEK %s", actives[0])
			}
			out := cli("keys", "destroy-retired")
			if !regexp.MustCompile(`keys destroyed=2\b`).MatchString(out) {
				t.Fatalf("keys destroy-retired printed %q, want the 2 retired versions destroyed", out)
			}

			// Every live key is now wrapped by the active KEK only.
			parts, _, err := stack.Open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			envs, err := parts.Keys.Live(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(envs) < 5 {
				t.Fatalf("%d live keys, want at least the 5 customers'", len(envs))
			}
			for scope, e := range envs {
				if e.KEK != actives[1] {
					t.Errorf("key of %s wrapped by %s, want the active %s", scope, e.KEK, actives[1])
				}
			}
			parts.Close()

			for _, mode := range []struct {
				name string
				args []string
			}{
				{"broker", nil},
				{"one target, no broker", []string{"--from-target", "t1"}},
			} {
				outDir := filepath.Join(dir, "restore-"+strings.ReplaceAll(mode.name, " ", "-"))
				line := cli(append([]string{"restore", "--all", "--out", outDir}, mode.args...)...)
				if !strings.Contains(line, "failures=0") {
					t.Fatalf("%s: restore printed %q", mode.name, line)
				}
				for rec, data := range want {
					c, key, _ := strings.Cut(rec, "/")
					got, err := os.ReadFile(restore.Path(outDir, tenant, c, key))
					if err != nil || !bytes.Equal(got, data) {
						t.Errorf("%s: %s restored %d bytes, want %d (%v)", mode.name, rec, len(got), len(data), err)
					}
				}
			}
		})
	}
}

func readLog(w *harness.Worker) string {
	b, _ := os.ReadFile(w.Log)
	return string(b)
}
