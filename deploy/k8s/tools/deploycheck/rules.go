package main

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
)

// Where the files are, relative to the repository's root.
const (
	rulesFile      = "deploy/prometheus/custos-rules.yaml"
	rulesCopy      = "deploy/helm/custos/files/custos-rules.yaml"
	dashboardFile  = "deploy/grafana/custos-dashboard.json"
	dashboardCopy  = "deploy/helm/custos/files/custos-dashboard.json"
	operationsDoc  = "docs/operations.md"
	runbookURLBase = "https://github.com/custos-dev/custos/blob/main/docs/operations.md#"
)

// minFor is the shortest "for" some alerts may have: a replica is missing for a while after
// every pack acknowledged with min_replicas, so only an hour means the repair is failing.
var minFor = map[string]time.Duration{"CustosReplicaMissing": time.Hour}

var severities = []string{"critical", "warning", "info"}

func checkRules(root string) ([]string, error) {
	path := filepath.Join(root, rulesFile)
	groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		var out []string
		for _, e := range errs {
			out = append(out, fmt.Sprintf("%s: %v", rulesFile, e))
		}
		return out, nil
	}
	anchors, err := headingAnchors(filepath.Join(root, operationsDoc))
	if err != nil {
		return nil, err
	}
	var problems []string
	add := func(alert, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s: %s: %s", rulesFile, alert, fmt.Sprintf(format, args...)))
	}
	seen := map[string]bool{}
	used := map[string]bool{}
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			name := r.Alert
			if name == "" {
				name = "record " + r.Record
			}
			n++
			if seen[name] {
				add(name, "defined twice")
			}
			seen[name] = true
			for _, p := range checkExpr(r.Expr, used) {
				add(name, "expr %s", p)
			}
			if r.Alert == "" {
				continue
			}
			if !slices.Contains(severities, r.Labels["severity"]) {
				add(name, "label severity %q is not one of %v", r.Labels["severity"], severities)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					add(name, "no %s annotation", a)
				}
			}
			if u := r.Annotations["runbook_url"]; u != "" {
				anchor, ok := strings.CutPrefix(u, runbookURLBase)
				if !ok {
					add(name, "runbook_url %q is not under %s", u, runbookURLBase)
				} else if !anchors[anchor] {
					add(name, "runbook_url anchor #%s is not a heading of %s", anchor, operationsDoc)
				}
			}
			if d, ok := minFor[name]; ok && time.Duration(r.For) < d {
				add(name, "for %s is shorter than %s", time.Duration(r.For), d)
			}
		}
	}
	for _, a := range requiredAlerts {
		if !seen[a] {
			problems = append(problems, fmt.Sprintf("%s: required alert %s is missing", rulesFile, a))
		}
	}
	if p := sameFile(root, rulesFile, rulesCopy); p != "" {
		problems = append(problems, p)
	}
	if len(problems) == 0 {
		fmt.Printf("%s: %d rules in %d groups OK, runbooks in %s, chart copy identical\n", rulesFile, n, len(groups.Groups), operationsDoc)
	}
	return problems, nil
}

// headingAnchors is the set of GitHub anchors of a Markdown file's headings.
func headingAnchors(path string) (map[string]bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	fence := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			fence = !fence
		}
		if fence || !strings.HasPrefix(line, "#") {
			continue
		}
		out[slug(strings.TrimLeft(line, "#"))] = true
	}
	return out, sc.Err()
}

// sameFile reports a problem when the chart's copy differs from the file under deploy/.
func sameFile(root, file, copyOf string) string {
	a, errA := os.ReadFile(filepath.Join(root, file))
	b, errB := os.ReadFile(filepath.Join(root, copyOf))
	if errA != nil || errB != nil || !bytes.Equal(a, b) {
		return fmt.Sprintf("%s differs from %s (helm cannot read files outside the chart): cp %s %s", copyOf, file, file, copyOf)
	}
	return ""
}
