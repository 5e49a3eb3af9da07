package main

import (
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/repository"
)

// TestDrillRunAndList: "custos drill run" restores from each target of the class and prints the
// figures with PASS; after a byte of a pack rots in one target, that target FAILs with a
// checksum failure and the command exits 1; "custos drill list" shows both drills.
func TestDrillRunAndList(t *testing.T) {
	s := startStack(t)
	first := s.writePack(t, 1)
	s.writePack(t, 2)

	out, stderr, code := s.runCaptured(t, drillCmd(), "drill", "run", "--class", "critical", "--sample", "all")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "TARGET  SAMPLE  ITEMS  BYTES  SECONDS  MB/S  CLASS SIZE  ESTIMATED  RTO") {
		t.Fatalf("output:\n%s", out)
	}
	for i, name := range []string{"fs:a", "fs:b"} {
		f := strings.Fields(lines[i+1])
		// TARGET SAMPLE ITEMS BYTES SECONDS MB/S CLASS-SIZE ESTIMATED RTO RESULT REASON
		if len(f) != 11 || f[0] != name || f[1] != "all" || f[2] != "6" || f[3] != "18000" || f[8] != "2d" || f[9] != "PASS" || f[10] != "-" {
			t.Fatalf("line %q", lines[i+1])
		}
	}

	s.flipOnDisk(t, "b", repository.PackName(first))
	out, stderr, code = s.runCaptured(t, drillCmd(), "drill", "run", "--class", "critical", "--target", "b", "--sample", "all")
	if code != 1 {
		t.Fatalf("exit %d\n%s\n%s", code, out, stderr)
	}
	if !strings.Contains(out, "fs:b") || !strings.Contains(out, "FAIL") || !strings.Contains(out, "1 of 6 sampled items failed their checksum") {
		t.Fatalf("output:\n%s", out)
	}

	out, _, code = s.runCaptured(t, drillCmd(), "drill", "list", "--class", "critical")
	if code != 0 {
		t.Fatalf("list: exit %d\n%s", code, out)
	}
	lines = strings.Split(strings.TrimSpace(out), "\n")
	outcome := func(l string) string { f := strings.Fields(l); return f[2] + " " + f[3] }
	if len(lines) != 4 || outcome(lines[1]) != "fs:a passed" || outcome(lines[2]) != "fs:b passed" || outcome(lines[3]) != "fs:b failed" {
		t.Fatalf("list:\n%s", out)
	}

	for _, args := range [][]string{
		{"drill", "run"},
		{"drill", "run", "--class", "critical", "--sample", "0"},
		{"drill", "run", "--class", "nope"},
		{"drill", "run", "--class", "critical", "--target", "z"},
	} {
		root := &cobra.Command{Use: "custos", SilenceUsage: true, SilenceErrors: true}
		root.PersistentFlags().String("config", "custos.yaml", "configuration file")
		root.AddCommand(drillCmd())
		root.SetOut(io.Discard)
		root.SetArgs(append(args, "--config", s.cfgPath))
		if err := root.ExecuteContext(t.Context()); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
