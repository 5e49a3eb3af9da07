package audit_test

import (
	"bytes"
	"testing"

	"github.com/custos-dev/custos/pkg/audit"
)

// FuzzVerify feeds Verify an export of entries (one per line) and a checkpoint. It must never
// panic; against the checkpoint of the six-entry seed log it may only accept exactly that log,
// and a checkpoint that parses must say the same again when formatted.
func FuzzVerify(f *testing.F) {
	k := newKey(f, 1)
	log := chain(f, 6)
	cp := k.checkpoint(f, log)
	f.Add(bytes.Join(log, []byte("\n")), cp)
	f.Add(bytes.Join(log[:5], []byte("\n")), k.checkpoint(f, log[:5]))
	f.Add(bytes.Join([][]byte{log[0], log[2], log[1]}, []byte("\n")), []byte("custos audit log\n1\n\n"))
	f.Add([]byte(`{"v":1,"index":0,"prev":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`), newKey(f, 2).checkpoint(f, log[:1]))
	f.Fuzz(func(t *testing.T, export, checkpoint []byte) {
		var entries [][]byte
		if len(export) > 0 {
			entries = bytes.Split(export, []byte("\n"))
		}
		rep, err := audit.Verify(entries, [][]byte{cp}, k.verifier)
		if err == nil {
			if len(entries) != len(log) {
				t.Fatalf("accepted %d entries against a checkpoint of %d", len(entries), len(log))
			}
			for i := range log {
				if !bytes.Equal(entries[i], log[i]) {
					t.Fatalf("accepted a changed entry %d: %q", i, entries[i])
				}
			}
		} else if rep.OK() {
			t.Fatalf("error %v with an OK report", err)
		}
		if c, err := audit.ParseCheckpoint(checkpoint, k.verifier); err == nil && !bytes.HasPrefix(checkpoint, []byte(c.Text())) {
			t.Fatalf("parsed %+v from a checkpoint that does not start with its text", c)
		}
		audit.Verify(entries, [][]byte{checkpoint}, k.verifier) //nolint:errcheck // must only not panic
		audit.SameTree(checkpoint, cp)
	})
}
