package source

import (
	"fmt"
	"slices"
)

// CustomerRange is a half-open range [From, To) of customer ids, compared as byte strings (Go's
// string order; SQL's COLLATE "C"). An empty From has no lower bound, an empty To no upper bound,
// so the zero CustomerRange is every customer. Numeric ids are compared as their decimal text:
// ranges still partition them exactly, only not in numeric order.
type CustomerRange struct {
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
}

// IsZero reports whether r is unbounded on both sides.
func (r CustomerRange) IsZero() bool { return r.From == "" && r.To == "" }

// Contains reports whether customer id is in r.
func (r CustomerRange) Contains(id string) bool {
	return (r.From == "" || id >= r.From) && (r.To == "" || id < r.To)
}

// Validate rejects a range whose upper bound is not above its lower bound.
func (r CustomerRange) Validate() error {
	if r.From != "" && r.To != "" && r.To <= r.From {
		return fmt.Errorf("%w: empty customer range [%q, %q)", ErrInvalidRequest, r.From, r.To)
	}
	return nil
}

// Ranges turns split points into ranges that cover every customer id exactly once:
// [, b1), [b1, b2), ..., [bn, ). Points are sorted and deduplicated first; empty points are
// dropped. With no points it returns the one unbounded range.
func Ranges(points []string) []CustomerRange {
	ps := slices.Clone(points)
	slices.Sort(ps)
	ps = slices.Compact(ps)
	ps = slices.DeleteFunc(ps, func(p string) bool { return p == "" })
	out := make([]CustomerRange, 0, len(ps)+1)
	from := ""
	for _, p := range ps {
		out = append(out, CustomerRange{From: from, To: p})
		from = p
	}
	return append(out, CustomerRange{From: from})
}
