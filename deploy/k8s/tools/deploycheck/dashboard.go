package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int           `json:"id"`
	Type    string        `json:"type"`
	Title   string        `json:"title"`
	GridPos *struct{}     `json:"gridPos"`
	Targets []panelTarget `json:"targets"`
	Panels  []panel       `json:"panels"` // a collapsed row's
}

type panelTarget struct {
	RefID string `json:"refId"`
	Expr  string `json:"expr"`
}

// Grafana's interval variables: replaced by a duration so the expression parses.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

func checkDashboard(root string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(root, dashboardFile))
	if err != nil {
		return nil, err
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return []string{fmt.Sprintf("%s: %v", dashboardFile, err)}, nil
	}
	var problems []string
	add := func(format string, args ...any) {
		problems = append(problems, dashboardFile+": "+fmt.Sprintf(format, args...))
	}
	if d.UID == "" || d.Title == "" {
		add("no uid or title")
	}
	ids := map[int]bool{}
	used := map[string]bool{}
	queries := 0
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] || p.ID == 0 {
				add("panel %q: id %d is missing or not unique", p.Title, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos == nil {
				add("panel %q: no gridPos", p.Title)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Title == "" || len(p.Targets) == 0 {
				add("panel %d: no title or no query", p.ID)
			}
			for _, t := range p.Targets {
				queries++
				for _, pr := range checkExpr(grafanaVars.Replace(t.Expr), used) {
					add("panel %q query %s: %s", p.Title, t.RefID, pr)
				}
			}
		}
	}
	walk(d.Panels)
	if missing := unused(used); len(missing) > 0 {
		add("no panel shows %s", strings.Join(missing, ", "))
	}
	if p := sameFile(root, dashboardFile, dashboardCopy); p != "" {
		problems = append(problems, p)
	}
	if len(problems) == 0 {
		fmt.Printf("%s: %d panels, %d queries OK, every metric shown, chart copy identical\n", dashboardFile, len(ids), queries)
	}
	return problems, nil
}
