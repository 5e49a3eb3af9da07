package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/cobra"
)

func runAuth(t *testing.T, args ...string) string {
	t.Helper()
	root := &cobra.Command{Use: "custos", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(authCmd())
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"auth", "generate"}, args...))
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("custos auth generate %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

func TestAuthGenerate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	first := runAuth(t, "--dir", dir)
	for _, role := range []string{"producer", "worker", "scheduler", "admin", "operator", "restorer", "auditor"} {
		if !strings.Contains(first, "\n"+role+" ") {
			t.Errorf("no line for %s in:\n%s", role, first)
		}
		fi, err := os.Stat(filepath.Join(dir, role+".nk"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s seed: %v, %v", role, fi, err)
		}
	}
	// Again, reserving deletions: the same users, other permissions.
	second := runAuth(t, "--dir", dir, "--reserve-deletion")
	if strings.Split(first, "wrote")[0] != strings.Split(second, "wrote")[0] {
		t.Fatalf("users changed:\n%s\n%s", first, second)
	}
	if !strings.Contains(second, "deletion requests reserved: true") {
		t.Fatalf("output:\n%s", second)
	}
	conf := filepath.Join(dir, authConfigFile)
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if len(opts.Nkeys) != 7 {
		t.Fatalf("%d users in %s", len(opts.Nkeys), conf)
	}
	producer := opts.Nkeys[0].Permissions.Publish
	if !slices.Contains(producer.Deny, "custos.v1.events.deletion_request") || slices.Contains(producer.Allow, "custos.v1.events.deletion_request") {
		t.Fatalf("producer publish permissions %+v", producer)
	}
}
