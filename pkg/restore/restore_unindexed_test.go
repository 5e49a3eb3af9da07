package restore_test

import (
	"slices"
	"testing"

	"github.com/custos-dev/custos/pkg/restore"
)

// A pack whose index entries were deleted (by anyone who can write to the broker) is still
// restored from the targets, and named so that the index can be rebuilt.
func TestAllRestoresPacksMissingFromTheIndex(t *testing.T) {
	t.Parallel()
	b := setup(t)
	kept := b.backup(t, "critical", rec("alice", "k", "alice's record", t0))
	lost := b.backup(t, "critical", rec("bob", "k", "bob's record", t0))
	if err := b.index.Remove(t.Context(), lost.Manifest.Pack); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	rep, err := b.restorer().All(t.Context(), restore.Options{Out: out})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Customers != 2 || rep.Records != 2 {
		t.Fatalf("report %+v, want both customers restored", rep)
	}
	if !slices.Equal(rep.Unindexed, []string{lost.Manifest.Pack}) {
		t.Fatalf("Unindexed = %v, want [%s] (and not the indexed %s)", rep.Unindexed, lost.Manifest.Pack, kept.Manifest.Pack)
	}
	checkFiles(t, out, want(out, append(kept.records, lost.records...)...))
}
