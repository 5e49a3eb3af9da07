// Package policy runs real worker processes under a policy file: a class whose runtime wiring
// breaks the policy is refused at start with the policy line it breaks, and a class wired as the
// policy says is backed up on the policy's targets.
package policy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/worker"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
	"github.com/custos-dev/custos/tests/harness"
)

// classes writes a policy class on the given targets; extra lines go under it.
func classes(targets, extra string) string {
	var b strings.Builder
	b.WriteString("classes:\n")
	for _, c := range []string{"critical", "important", "non_essential"} {
		b.WriteString("  " + c + ":\n" +
			"    schedules: [{name: daily, cron: \"0 2 * * *\", method: incremental}]\n" +
			"    retention: {min: 30d, daily: 30}\n" +
			"    targets: [" + targets + "]\n" +
			"    rpo: 48h\n    rto: 48h\n" + extra)
	}
	return b.String()
}

// start runs a broker and rewrites the harness's configuration: its fs targets t0..t2, plus
// extraTargets, no classes of its own, and policy.yaml with the given text.
func start(t *testing.T, extraTargets, classesYAML, pol string) *harness.Stack {
	t.Helper()
	stack, err := harness.Start(t.TempDir(), harness.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stack.Close)
	b, err := os.ReadFile(stack.Config)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i, j := strings.Index(text, "classes:\n"), strings.Index(text, "worker:\n")
	text = strings.Replace(text[:i], "targets:\n", "targets:\n"+extraTargets, 1) + classesYAML + text[j:] + "policy: policy.yaml\n"
	if err := os.WriteFile(stack.Config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stack.Dir, "policy.yaml"), []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	return stack
}

// refused runs a worker that must exit at start, and returns what it printed.
func refused(t *testing.T, stack *harness.Stack) string {
	t.Helper()
	bin, err := harness.WorkerBinary()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--config", stack.Config, "--name", "w").CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("worker started (err %v) with a class wired against its policy:\n%s", err, out)
	}
	return string(out)
}

const policyHead = "version: 1\ntenant: t1\n"

func TestWorkerRefusesClassWiredAgainstPolicy(t *testing.T) {
	// The policy's 3-2-1 needs a fourth, off-site S3 copy; the runtime lists three disks.
	t.Run("fewer targets than 3-2-1", func(t *testing.T) {
		pol := policyHead + "targets:\n  - {name: t0, kind: fs}\n  - {name: t1, kind: fs}\n  - {name: t2, kind: fs}\n" +
			"  - {name: c0, kind: s3, offsite: true}\n" + classes("t0, t1, t2, c0", "")
		stack := start(t, "", "classes:\n  critical:\n    targets: [t0, t1, t2]\n", pol)
		out := refused(t, stack)
		for _, want := range []string{
			// line 9 is "  critical:" in the policy above
			`policy.yaml:9: class "critical": the runtime configuration lists targets [t0, t1, t2] but the policy requires [t0, t1, t2, c0]`,
			`policy.yaml:9: class "critical" needs target "c0" (policy line 7), which the runtime configuration does not define`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("worker output does not say %q:\n%s", want, out)
			}
		}
	})
	// The policy locks critical in compliance mode; the S3 bucket wired for it does not lock.
	t.Run("missing immutability", func(t *testing.T) {
		pol := policyHead + "targets:\n  - {name: t0, kind: fs}\n  - {name: t1, kind: fs}\n" +
			"  - {name: c0, kind: s3, offsite: true}\n" +
			classes("t0, t1, c0", "    immutability: {mode: compliance, retain_days: 30}\n")
		stack := start(t, "  - {name: c0, kind: s3, bucket: b, endpoint: \"http://127.0.0.1:9\"}\n", "", pol)
		out := refused(t, stack)
		want := `policy.yaml:8: class "critical" needs compliance immutability, but target "c0" (s3) has no lock_mode`
		if !strings.Contains(out, want) {
			t.Errorf("worker output does not say %q:\n%s", want, out)
		}
	})
}

// A class wired as its policy says runs: its events are backed up on the policy's targets only.
func TestWorkerRunsPolicyClasses(t *testing.T) {
	pol := policyHead + "targets:\n  - {name: t0, kind: fs}\n  - {name: t1, kind: fs, offsite: true}\n  - {name: t2, kind: fs}\n" +
		classes("t0, t1", "    override_321: \"test: two local disks\"\n")
	stack := start(t, "", "", pol)
	ctx := context.Background()
	if err := worker.EnsureStreams(ctx, stack.JS); err != nil {
		t.Fatal(err)
	}
	bin, err := harness.WorkerBinary()
	if err != nil {
		t.Fatal(err)
	}
	w, err := stack.StartWorker(bin, "w")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Kill()
	p, err := producer.New(stack.JS, "urn:test:policy")
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.PublishPostTransaction(ctx, &custosv1.PostTransaction{
		Meta:   &custosv1.Meta{EventId: "e1", Time: timestamppb.Now(), Tenant: "t1", CustomerId: "c1", DataClass: "critical"},
		Record: &custosv1.Record{Key: "r1", Source: &custosv1.Record_Inline{Inline: []byte(`{"total":1}`)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitSettled(ctx, time.Minute); err != nil {
		b, _ := os.ReadFile(w.Log)
		t.Fatalf("%v\n%s", err, b)
	}
	for i, dir := range stack.Targets {
		packs, _ := filepath.Glob(filepath.Join(dir, "packs", "*", "*"))
		if got, want := len(packs) > 0, i < 2; got != want {
			t.Errorf("target t%d holds packs: %v, want %v (the policy names t0 and t1)", i, got, want)
		}
	}
}
