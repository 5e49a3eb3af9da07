package restore

import (
	"slices"
	"testing"

	"github.com/custos-dev/custos/pkg/pack"
)

// Items of a pack are read together unless far apart, overlapping (an index that is not
// authenticated may say anything) or too many bytes for one read.
func TestRanges(t *testing.T) {
	t.Parallel()
	j := func(id string, off, n int64) *job {
		return &job{located: located{pack: "p", entry: pack.Entry{ID: id, Offset: off, Length: n}}}
	}
	items := []*job{
		j("c", 300, 100), j("a", 0, 100), j("b", 150, 100), // one range, in offset order
		j("d", 400+maxGap+1, 10),                                        // too far from c
		j("e", 400+maxGap+5, 10),                                        // overlaps d
		j("f", 2*maxGap, maxRange-10), j("g", 2*maxGap+maxRange-10, 20), // g would exceed maxRange
	}
	var got [][]string
	for _, rg := range ranges(items) {
		var ids []string
		for _, x := range rg {
			ids = append(ids, x.entry.ID)
		}
		got = append(got, ids)
	}
	want := [][]string{{"a", "b", "c"}, {"d"}, {"e"}, {"f"}, {"g"}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("ranges = %v, want %v", got, want)
	}
}
