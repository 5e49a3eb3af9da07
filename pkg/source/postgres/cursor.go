package postgres

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"

	"github.com/custos-dev/custos/pkg/internal/pattern"
	"github.com/custos-dev/custos/pkg/source"
)

// cursor is the stored position of a class: JSON, opaque to callers.
type cursor struct {
	V     int    `json:"v"`
	Class string `json:"class"`
	Mode  Mode   `json:"mode"`
	// Tables holds, in ByColumn mode, the change value every later write of a table exceeds;
	// a table missing here (new in the configuration, or empty) is read whole.
	Tables map[string]*bound `json:"tables,omitempty"`
	// Xmin is, in ByXmin mode, the oldest transaction id (64-bit) whose writes the snapshot might
	// not have seen.
	Xmin int64 `json:"xmin,omitempty"`
	// HeldBack records that transactions were still open when the snapshot started, so the
	// position was not advanced.
	HeldBack bool `json:"held_back,omitempty"`
}

// bound is a change column value as text, with its type.
type bound struct {
	Value string `json:"value"`
	Type  string `json:"type"`
}

const cursorVersion = 1

func (c cursor) encode() []byte {
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // plain struct: cannot fail
	}
	return b
}

func decodeCursor(b []byte, class string, mode Mode) (cursor, error) {
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%w: not a postgres source cursor", source.ErrInvalidCursor)
	}
	if c.V != cursorVersion {
		return c, fmt.Errorf("%w: cursor version %d", source.ErrInvalidCursor, c.V)
	}
	if c.Class != class {
		return c, fmt.Errorf("%w: cursor of class %q used for class %q", source.ErrInvalidCursor, c.Class, class)
	}
	if c.Mode != mode {
		return c, fmt.Errorf("%w: cursor of incremental mode %q, class is configured for %q", source.ErrInvalidCursor, c.Mode, mode)
	}
	switch mode {
	case ByXmin:
		if c.Xmin < 3 || c.Tables != nil {
			return c, fmt.Errorf("%w: malformed xmin cursor", source.ErrInvalidCursor)
		}
	case ByColumn:
		if c.Xmin != 0 {
			return c, fmt.Errorf("%w: malformed column cursor", source.ErrInvalidCursor)
		}
		for name, b := range c.Tables {
			if b == nil {
				continue
			}
			if _, ok := changeTypes[b.Type]; !ok {
				return c, fmt.Errorf("%w: table %q: change column type %q", source.ErrInvalidCursor, name, b.Type)
			}
		}
	}
	return c, nil
}

// window turns a ByXmin cursor and the new snapshot's xmax into the window of transactions to
// read, refusing cursors the 32-bit xmin column cannot tell apart any more.
func (c cursor) window(xmax int64) (xminWindow, error) {
	switch {
	case c.Xmin > xmax:
		return xminWindow{}, fmt.Errorf("%w: cursor transaction id is ahead of the database (restored or another cluster?)", source.ErrInvalidCursor)
	case xmax-c.Xmin >= math.MaxInt32:
		return xminWindow{}, fmt.Errorf("%w: more than 2^31 transactions since the cursor: xmin can no longer tell new rows from old", source.ErrInvalidCursor)
	}
	return xminWindow{lo: c.Xmin, hi: xmax}, nil
}

// shared is what an Export token carries.
type shared struct {
	Snapshot string `json:"snapshot"`
	Class    string `json:"class"`
	Method   string `json:"method"`
	Cursor   []byte `json:"cursor"`
}

// snapshotIDRE matches what pg_export_snapshot returns; anything else is refused before it gets
// near SET TRANSACTION SNAPSHOT, which takes a literal, not a parameter.
var snapshotIDRE = pattern.Lazy(`^[0-9A-F]{1,16}-[0-9A-F]{1,16}-[0-9]{1,10}$`)

func (s shared) token() string {
	b, _ := json.Marshal(s)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeShared(tok string) (shared, error) {
	var s shared
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err == nil {
		err = json.Unmarshal(b, &s)
	}
	if err != nil || !snapshotIDRE().MatchString(s.Snapshot) || len(s.Cursor) == 0 {
		return s, fmt.Errorf("%w: malformed shared snapshot token", source.ErrInvalidRequest)
	}
	return s, nil
}
