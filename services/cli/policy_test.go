package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/config"
)

// execute runs the custos command tree in-process with args and returns what it printed.
func execute(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := &cobra.Command{Use: "custos", SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().String("config", "custos.yaml", "configuration file")
	root.AddCommand(policyCmd(), scheduleCmd(), backupCmd(), auditCmd())
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

const examplePolicy = "../../deploy/policy.example.yaml"

func TestPolicyCheckOK(t *testing.T) {
	out, err := execute(t, "policy", "check", examplePolicy)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		"OK policy.example.yaml: tenant acme, 2 classes, 3 deadlines, catch-up 12h",
		`  critical: nightly "30 1 * * *" incremental (every 7th full), month-start "0 1 1 * *" full Europe/Berlin; keep min 30d, last 7, daily 30, monthly 12; 3 of 4 targets (local=fs, frankfurt=s3, dublin=gcs, vault=azure; 2 off-site); immutability compliance 30d, legal hold on suspicious activity; RPO 2d, RTO 4h; drill "0 6 15 2,5,8,11 *", sample 100 per target`,
		`  marketing: weekly "0 3 * * 0" incremental America/New_York; keep min 56d, weekly 8; 2 of 2 targets (local=fs, frankfurt=s3; 0 off-site); immutability none; RPO 8d, RTO 3d; drill "0 6 15 2,5,8,11 *", sample 100 per target`,
		"  deadline end_of_month: last day of each month at 22:00 Europe/Berlin for critical, marketing",
		"  deadline end_of_fiscal_year: last day of March at 23:00 Europe/Berlin for critical",
		"  deadline gdpr_review: 2027-05-25T09:00:00+02:00 for critical, marketing",
	}
	if len(lines) != len(want)+1 {
		t.Fatalf("output:\n%s", out)
	}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("line %d:\n got %s\nwant %s", i+1, lines[i], w)
		}
	}
	if w := lines[len(lines)-1]; !strings.HasPrefix(w, "warning: policy.example.yaml:70:19: class \"marketing\": breaks 3-2-1 (2 copies (needs 3), no off-site target (needs 1)); accepted by override_321: rebuilt") {
		t.Errorf("warning line: %s", w)
	}
}

func TestPolicyCheckErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	src := `version: 1
tenant: acme
targets:
  - {name: disk, kind: tape}
classes:
  critical:
    schedules: [{name: daily, cron: "0 2 * * *"}]
    retention: {min: 1d}
    targets: [disk, nas]
    rpo: 48h
    rto: 48h
    colour: red
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := execute(t, "policy", "check", path)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || ee.msg != "policy "+path+": 4 errors" {
		t.Fatalf("err %v", err)
	}
	want := `bad.yaml:4:24: target "disk": kind "tape" is not one of fs, s3, gcs, azure, rclone (rule target-kind)
bad.yaml:8:17: class "critical": retention.min 1d is shorter than the RPO 48h: the newest backup could expire before the next one is taken (rule retention-min)
bad.yaml:9:21: class "critical": target "nas" is not defined under targets (rule target)
bad.yaml:12:5: class "critical": unknown key "colour" (known keys: description, drill, immutability, override_321, override_rpo, replicas, retention, rpo, rto, schedules, targets, timezone) (rule unknown-key)
`
	if out != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out, want)
	}
}

func TestPolicyCheckUsage(t *testing.T) {
	if _, err := execute(t, "policy", "check"); err == nil {
		t.Fatal("no error without a file")
	}
	out, err := execute(t, "policy", "check", filepath.Join(t.TempDir(), "missing.yaml"))
	var ee *exitError
	if !errors.As(err, &ee) || !strings.Contains(out, "no such file") {
		t.Fatalf("%v: %s", err, out)
	}
}

// The default policy, printed and checked again, passes with its one documented warning.
func TestPolicyDefault(t *testing.T) {
	out, err := execute(t, "policy", "default")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "default.yaml")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = execute(t, "policy", "check", path)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.HasPrefix(out, "OK default.yaml: tenant default, 3 classes, 2 deadlines, catch-up 1d\n") ||
		!strings.Contains(out, "  critical: daily \"0 2 * * *\" incremental, monthly-full \"0 2 1 * *\" full UTC; keep min 30d, daily 30;") ||
		strings.Count(out, "warning: ") != 1 || !strings.Contains(out, "override_rpo: seed 002") {
		t.Fatalf("output:\n%s", out)
	}
}

// A command runs under the policy the configuration names; --policy may only name that same
// file, or stand alone when the configuration names none.
func TestPolicyForOneTruth(t *testing.T) {
	dir := t.TempDir()
	pol := "version: 1\ntenant: t1\ntargets:\n  - {name: a, kind: fs}\n  - {name: b, kind: fs, offsite: true}\nclasses:\n" +
		"  critical:\n    schedules: [{name: d, cron: \"0 2 * * *\"}]\n    retention: {min: 30d, daily: 30}\n" +
		"    targets: [a, b]\n    rpo: 48h\n    rto: 48h\n    override_321: \"test\"\n"
	base := "nats: {url: \"nats://127.0.0.1:1\"}\nkeys: {file: k}\ntargets:\n  - {name: a, kind: fs, path: a}\n  - {name: b, kind: fs, path: b}\n"
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	polPath, other := write("policy.yaml", pol), write("other.yaml", pol)
	named, err := config.Load(write("named.yaml", base+"policy: policy.yaml\n"))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := config.Load(write("plain.yaml", base+"classes:\n  critical: {targets: [a, b]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := named.PolicyOr(""); err != nil || p != named.Policy() {
		t.Errorf("no flag: %v, %v; want the configured policy", p, err)
	}
	if p, err := named.PolicyOr(polPath); err != nil || p != named.Policy() {
		t.Errorf("the same file: %v, %v; want the configured policy", p, err)
	}
	if _, err := named.PolicyOr(other); err == nil || !strings.Contains(err.Error(), "is not the policy the configuration names") {
		t.Errorf("another file: %v; want a refusal", err)
	}
	if p, err := plain.PolicyOr(""); err != nil || p != nil {
		t.Errorf("no policy anywhere: %v, %v; want none", p, err)
	}
	if p, err := plain.PolicyOr(other); err != nil || p == nil || p.Class("critical") == nil {
		t.Errorf("--policy alone: %v, %v; want that file", p, err)
	}
}
