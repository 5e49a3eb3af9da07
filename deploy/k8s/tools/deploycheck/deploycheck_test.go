package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the repository this module sits in (deploy/k8s/tools/deploycheck).
const repoRoot = "../../../.."

func TestCheckExpr(t *testing.T) {
	for _, c := range []struct {
		expr string
		want string // a substring of the one problem, or "" for none
	}{
		{`sum by (class) (rate(custos_events_acked_total[5m]))`, ""},
		{`histogram_quantile(0.99, sum by (le, class) (rate(custos_pack_commit_duration_seconds_bucket[5m])))`, ""},
		{`max by (consumer) (custos_consumer_pending{consumer="custos-workers"}) > 10000`, ""},
		{`(sum(rate(custos_events_acked_total[15m])) or on () vector(0)) == 0`, ""},
		{`absent(custos_consumer_pending{consumer="custos-workers"})`, ""},
		{`sum by (job) (custos_dead_letters)`, ""},
		{`sum by (class) (max by (class, target) (custos_drill_last_passed))`, ""},
		{`rate(custos_events_ackd_total[5m])`, `unknown metric "custos_events_ackd_total"`},
		{`custos_pack_commit_duration_seconds`, `unknown metric`},
		{`custos_rpo_breached{clas="x"}`, `has no label "clas"`},
		{`sum by (target) (custos_rpo_age_seconds)`, `groups by "target"`},
		{`sum by (class) (sum(custos_rpo_age_seconds))`, `groups by "class"`},
		{`sum(rate(custos_events_acked_total[5m])`, `does not parse`},
	} {
		problems := checkExpr(c.expr, map[string]bool{})
		switch {
		case c.want == "" && len(problems) > 0:
			t.Errorf("%s: unexpected %v", c.expr, problems)
		case c.want != "" && (len(problems) != 1 || !strings.Contains(problems[0], c.want)):
			t.Errorf("%s: got %v, want one problem with %q", c.expr, problems, c.want)
		}
	}
}

func TestSlugIsGitHubsAnchor(t *testing.T) {
	for in, want := range map[string]string{
		" CustosRPOBreach":         "custosrpobreach",
		" On Kubernetes":           "on-kubernetes",
		" 5. The RPO monitor":      "5-the-rpo-monitor",
		" `custos.yaml` (runtime)": "custosyaml-runtime",
	} {
		if got := slug(in); got != want {
			t.Errorf("slug(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRepositoryFilesPass(t *testing.T) {
	if p, err := checkRules(repoRoot); err != nil || len(p) > 0 {
		t.Errorf("rules: %v %v", err, p)
	}
	if p, err := checkDashboard(repoRoot); err != nil || len(p) > 0 {
		t.Errorf("dashboard: %v %v", err, p)
	}
}

// fixture copies the files the checks read into a fresh root, for a test to break.
func fixture(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, f := range []string{rulesFile, rulesCopy, dashboardFile, dashboardCopy, operationsDoc} {
		b, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			t.Fatal(err)
		}
		write(t, root, f, string(b))
	}
	return root
}

func write(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func edit(t *testing.T, root, rel, old, new string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no %q", rel, old)
	}
	write(t, root, rel, strings.Replace(string(b), old, new, 1))
}

func TestRulesProblemsAreFound(t *testing.T) {
	for _, c := range []struct {
		name, file, old, new, want string
	}{
		{"missing alert", rulesFile, "alert: CustosDrillFailed", "alert: CustosDrillBroke", "required alert CustosDrillFailed is missing"},
		{"unknown metric", rulesFile, "max by (class) (custos_rpo_breached)", "max by (class) (custos_rpo_breach)", `unknown metric "custos_rpo_breach"`},
		{"bad PromQL", rulesFile, "max by (class) (custos_rpo_breached) == 1", "max by (class) (custos_rpo_breached == 1", "parse"},
		{"bad template", rulesFile, "'Class {{ $labels.class }} has no backup", "'Class {{ $labels.class has no backup", "template"},
		{"runbook anchor not in the doc", operationsDoc, "### CustosDeadLetters", "### Dead letters", "#custosdeadletters is not a heading"},
		{"runbook elsewhere", rulesFile, "https://github.com/custos-dev/custos/blob/main/docs/operations.md#custosconsumerlag", "https://example.com/lag", "is not under"},
		{"replica alert too eager", rulesFile, "max by (class) (custos_replicas_missing) > 0\n        for: 1h", "max by (class) (custos_replicas_missing) > 0\n        for: 30m", "shorter than 1h0m0s"},
		{"no severity", rulesFile, "severity: warning", "severity: page", "label severity"},
		{"chart copy stale", rulesCopy, "for: 15m", "for: 16m", "differs from"},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := fixture(t)
			edit(t, root, c.file, c.old, c.new)
			if c.file == rulesFile && c.name != "chart copy stale" { // keep the copy in step
				b, _ := os.ReadFile(filepath.Join(root, rulesFile))
				write(t, root, rulesCopy, string(b))
			}
			problems, err := checkRules(root)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, c.want) }) {
				t.Errorf("problems %v lack %q", problems, c.want)
			}
		})
	}
}

func TestDashboardProblemsAreFound(t *testing.T) {
	for _, c := range []struct {
		name, old, new, want string
	}{
		{"unknown metric", "max(custos_repair_queue_depth)", "max(custos_repair_queue)", "unknown metric"},
		{"metric not shown", `"expr": "max(custos_dead_letters)"`, `"expr": "max(custos_replicas_missing)"`, "no panel shows custos_dead_letters"},
		{"duplicate id", `"id": 2,`, `"id": 1,`, "not unique"},
		{"bad label", "sum by (target, operation) (rate(custos_target_bytes_total", "sum by (targt, operation) (rate(custos_target_bytes_total", `groups by "targt"`},
		{"not JSON", `"uid": "custos-overview",`, `"uid": "custos-overview"`, "invalid character"},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := fixture(t)
			edit(t, root, dashboardFile, c.old, c.new)
			b, _ := os.ReadFile(filepath.Join(root, dashboardFile))
			write(t, root, dashboardCopy, string(b))
			problems, err := checkDashboard(root)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, c.want) }) {
				t.Errorf("problems %v lack %q", problems, c.want)
			}
		})
	}
	root := fixture(t)
	write(t, root, dashboardCopy, "{}")
	if p, _ := checkDashboard(root); !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, "differs from") }) {
		t.Errorf("stale chart copy not found: %v", p)
	}
}

func TestFindManifests(t *testing.T) {
	root := t.TempDir()
	write(t, root, "deploy/k8s/ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: custos}\n")
	write(t, root, "deploy/k8s/multi.yml", "a: 1\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
	write(t, root, "deploy/policy.example.yaml", "version: 1\nkind: fs\n") // kind without apiVersion
	write(t, root, "deploy/prometheus/rules.yaml", "groups: []\n")
	write(t, root, "deploy/helm/c/Chart.yaml", "apiVersion: v2\nname: c\nversion: 0.1.0\n")
	write(t, root, "deploy/helm/c/templates/x.yaml", "apiVersion: v1\nkind: {{ .Values.kind }}\n")
	write(t, root, "deploy/emulators/x/node_modules/p/m.yaml", "apiVersion: v1\nkind: Pod\n")
	write(t, root, "deploy/nats/nats-server.conf", "listen: 0.0.0.0:4222\n")
	got, err := findManifests(root)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"deploy/k8s/multi.yml", "deploy/k8s/ns.yaml"}; !slices.Equal(got, want) {
		t.Errorf("manifests %v, want %v", got, want)
	}
	write(t, root, "deploy/broken.yaml", "a: [\n")
	if _, err := findManifests(root); err == nil || !strings.Contains(err.Error(), "broken.yaml") {
		t.Errorf("malformed YAML: %v, want an error naming the file", err)
	}
}
