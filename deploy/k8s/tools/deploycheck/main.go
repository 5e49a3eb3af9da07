// Command deploycheck checks what in deploy/ is not a Kubernetes object kubeconform could
// validate, and finds what is:
//
//	deploycheck rules -root DIR      the Prometheus rule file: parsed and checked as promtool
//	                                 does (rulefmt: PromQL, templates), every required alert
//	                                 present with severity, summary and a runbook anchor that
//	                                 exists in docs/operations.md, only known metrics and labels,
//	                                 and the chart's copy identical
//	deploycheck dashboard -root DIR  the Grafana dashboard: valid JSON, unique panel ids, PromQL
//	                                 that parses and uses only known metrics and labels, every
//	                                 known metric shown, and the chart's copy identical
//	deploycheck manifests -root DIR  prints every YAML file under deploy/ that holds Kubernetes
//	                                 objects (charts excluded: they are rendered and validated
//	                                 by themselves)
//
// Each prints what it checked, or every problem found and exits 1.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	root := fs.String("root", ".", "the repository's root")
	_ = fs.Parse(os.Args[2:])
	var problems []string
	var err error
	switch os.Args[1] {
	case "rules":
		problems, err = checkRules(*root)
	case "dashboard":
		problems, err = checkDashboard(*root)
	case "manifests":
		var files []string
		files, err = findManifests(*root)
		for _, f := range files {
			fmt.Println(f)
		}
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "deploycheck %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(os.Stderr, "deploycheck %s: %s\n", os.Args[1], p)
		}
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: deploycheck rules|dashboard|manifests [-root DIR]")
	os.Exit(2)
}
