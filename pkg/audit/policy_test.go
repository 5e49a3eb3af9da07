package audit_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/internal/natstest"
	"github.com/custos-dev/custos/pkg/policy"
)

// policyChanges returns the policy_change entries of the log.
func policyChanges(t *testing.T, js jetstream.JetStream) []audit.Entry {
	t.Helper()
	entries, err := audit.List(context.Background(), js, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Entry
	for _, e := range entries {
		if e.Kind == audit.KindPolicyChange {
			out = append(out, e)
		}
	}
	return out
}

// Processes starting at once with a policy record it once; starting again with the same file
// records nothing; an edited file is recorded again, and so is going back to the first one.
func TestRecordPolicyOncePerChange(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	first := policy.DefaultYAML()
	if err := os.WriteFile(path, first, 0o600); err != nil {
		t.Fatal(err)
	}
	// Each "process" has its own connection, as the scheduler and the workers do.
	start := func(n int) {
		var wg sync.WaitGroup
		for range n {
			nc, err := nats.Connect(ns.URL)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				if _, err := audit.RecordPolicyFile(ctx, js, path, time.Now()); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	start(4)
	got := policyChanges(t, ns.JS)
	if len(got) != 1 || got[0].Policy != policy.Digest(first) || got[0].Reason != "policy.yaml" || got[0].Outcome != audit.OutcomeLoaded {
		t.Fatalf("after 4 concurrent starts: %+v", got)
	}
	start(2)
	if got := policyChanges(t, ns.JS); len(got) != 1 {
		t.Fatalf("a restart with the same policy recorded it again: %+v", got)
	}
	edited := append(append([]byte(nil), first...), "\n# reviewed\n"...)
	if err := os.WriteFile(path, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	start(3)
	if err := os.WriteFile(path, first, 0o600); err != nil {
		t.Fatal(err)
	}
	start(2)
	got = policyChanges(t, ns.JS)
	if len(got) != 3 || got[1].Policy != policy.Digest(edited) || got[2].Policy != policy.Digest(first) {
		t.Fatalf("after the edit and back: %+v", got)
	}
	// The built-in default is recorded under its name when no file is given.
	if recorded, err := audit.RecordPolicyFile(ctx, ns.JS, "", time.Now()); err != nil || recorded {
		t.Fatalf("the built-in default, identical to the last file: recorded %v, %v", recorded, err)
	}
	entries, err := audit.ReadEntries(ctx, ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(entries, nil, nil); err != nil {
		t.Fatal(err)
	}
}
