package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
)

var promql = parser.NewParser(parser.Options{})

// checkExpr parses a PromQL expression and returns its problems: unknown metrics, label
// matchers or groupings on labels the metrics do not carry. It adds the metrics it uses to used.
func checkExpr(expr string, used map[string]bool) []string {
	e, err := promql.ParseExpr(expr)
	if err != nil {
		return []string{fmt.Sprintf("does not parse: %v", err)}
	}
	var problems []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch t := n.(type) {
		case *parser.VectorSelector:
			labels, ok := metricLabels(t.Name)
			if !ok {
				problems = append(problems, fmt.Sprintf("unknown metric %q", t.Name))
				return nil
			}
			used[baseName(t.Name)] = true
			for _, m := range t.LabelMatchers {
				if !labels[m.Name] {
					problems = append(problems, fmt.Sprintf("%s has no label %q", t.Name, m.Name))
				}
			}
		case *parser.AggregateExpr:
			if t.Without || len(t.Grouping) == 0 {
				return nil
			}
			have := exprLabels(t.Expr)
			for _, g := range t.Grouping {
				if !have[g] {
					problems = append(problems, fmt.Sprintf("%s groups by %q, which its input does not carry", t.Op, g))
				}
			}
		}
		return nil
	})
	return problems
}

// exprLabels is every label the series of e may carry: the union over the metrics it selects,
// or the grouping of an aggregation (histogram_quantile drops le).
func exprLabels(e parser.Expr) map[string]bool {
	out := map[string]bool{}
	switch t := e.(type) {
	case *parser.AggregateExpr:
		if !t.Without && len(t.Grouping) > 0 {
			for _, g := range t.Grouping {
				out[g] = true
			}
			return out
		}
		if len(t.Grouping) == 0 && !t.Without {
			return out // sum(x): no labels
		}
		return exprLabels(t.Expr)
	case *parser.Call:
		for _, a := range t.Args {
			for l := range exprLabels(a) {
				out[l] = true
			}
		}
		if t.Func.Name == "histogram_quantile" {
			delete(out, "le")
		}
		return out
	case *parser.VectorSelector:
		ls, _ := metricLabels(t.Name)
		return ls
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if ex, ok := n.(parser.Expr); ok && ex != e {
			switch ex.(type) {
			case *parser.VectorSelector, *parser.AggregateExpr, *parser.Call:
				for l := range exprLabels(ex) {
					out[l] = true
				}
			}
		}
		return nil
	})
	return out
}

func baseName(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := cutSuffix(name, suffix); ok && histograms[b] {
			return b
		}
	}
	return name
}

// unused lists the known metrics not in used, sorted.
func unused(used map[string]bool) []string {
	var out []string
	for m := range knownMetrics {
		if !used[m] {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out
}

// slug is GitHub's anchor for a Markdown heading: lower case, punctuation but - and _ dropped,
// spaces as -.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		case r > 127: // letters of other scripts stay
			b.WriteRune(r)
		}
	}
	return b.String()
}
