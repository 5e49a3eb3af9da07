package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/target"
)

// writePack writes a real pack of three items and its sealed manifest to both fs targets, as
// a worker does, and indexes it.
func (s *stack) writePack(t *testing.T, seq uint64) string {
	t.Helper()
	ctx := t.Context()
	codec, err := pack.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	c := s.parts.KMS.Pseudonym("acme", "c-1")
	dek, err := s.parts.Keys.DataKey(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	var items []pack.Item
	for i := range uint64(3) {
		id := fmt.Sprintf("%032x", seq*10+i)
		sealed, err := codec.SealItem(dek, c, "critical", id, pack.ItemMeta{Tenant: "acme", CustomerID: "c-1", RecordKey: "k"},
			bytes.Repeat([]byte("order "), 500))
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, pack.Item{ID: id, Customer: c, Seq: seq*10 + i, EventTime: time.Now(), Sealed: sealed})
	}
	built := pack.Build("critical", items)
	m := built.Manifest
	env, err := s.parts.Keys.Envelope(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	m.Keys = map[string]pack.WrappedKey{c: {KEK: env.KEK, DEK: env.DEK}}
	sealer, err := repository.NewSealer(ctx, s.parts.Keys, s.parts.KMS.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	man, err := sealer.Manifest(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range s.parts.Targets {
		for name, data := range map[string][]byte{repository.PackName(m.Pack): built.Data, repository.ManifestName(m.Pack): man} {
			if err := tg.Put(ctx, name, bytes.NewReader(data), int64(len(data)), target.PutOptions{SHA256: sha256.Sum256(data)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.parts.Index.Commit(ctx, m, s.cfg.TargetNames([]string{"a", "b"}), time.Now()); err != nil {
		t.Fatal(err)
	}
	return m.Pack
}

// flipOnDisk flips one byte of an object in an fs target's directory, as bit rot would.
func (s *stack) flipOnDisk(t *testing.T, targetDir, name string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(s.dir, targetDir, filepath.FromSlash(name)), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], 100); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x20
	if _, err := f.WriteAt(b[:], 100); err != nil {
		t.Fatal(err)
	}
}

// verify runs the verify command and returns its stdout, its stderr and its exit code.
func (s *stack) verify(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return s.runCaptured(t, verifyCmd(), append([]string{"verify"}, args...)...)
}

func summary(t *testing.T, out string) string {
	t.Helper()
	line := strings.TrimSpace(out)
	i := strings.LastIndex(line, " seconds=")
	if !strings.HasPrefix(line, "verified ") || i < 0 {
		t.Fatalf("summary line %q", out)
	}
	return line[:i]
}

func TestVerifyRepairsBitRot(t *testing.T) {
	s := startStack(t)
	id := s.writePack(t, 1)
	other := s.writePack(t, 2)
	s.flipOnDisk(t, "a", repository.PackName(id))

	// fs targets do not report checksums: the structural check cannot see rot.
	out, errOut, code := s.verify(t)
	if got := summary(t, out); code != 0 || got != "verified packs=2 replicas=4 bytes_read=0 problems=0 repaired=0 unrecoverable=0" {
		t.Fatalf("structural check: exit %d, %q\n%s", code, got, errOut)
	}
	out, errOut, code = s.verify(t, "--read-data", "--no-repair")
	if got := summary(t, out); code != 2 || !strings.Contains(got, " problems=1 repaired=0 unrecoverable=0") ||
		!strings.Contains(errOut, "CORRUPT fs:a "+repository.PackName(id)+": checksum") {
		t.Fatalf("--no-repair: exit %d, %q\n%s", code, got, errOut)
	}
	out, errOut, code = s.verify(t, "--read-data")
	if got := summary(t, out); code != 0 || !strings.Contains(got, " problems=1 repaired=1 unrecoverable=0") ||
		strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "REPAIRED fs:a "+repository.PackName(id)+": checksum") {
		t.Fatalf("read data: exit %d, %q\n%s", code, got, errOut)
	}
	out, errOut, code = s.verify(t, "--read-data")
	if got := summary(t, out); code != 0 || !strings.Contains(got, " problems=0 repaired=0 unrecoverable=0") || errOut != "" {
		t.Fatalf("second run: exit %d, %q\n%s", code, got, errOut)
	}

	// Rot in every replica leaves nothing to repair from.
	s.flipOnDisk(t, "a", repository.PackName(other))
	s.flipOnDisk(t, "b", repository.PackName(other))
	out, errOut, code = s.verify(t, "--read-data")
	if got := summary(t, out); code != 2 || !strings.Contains(got, " problems=2 repaired=0 unrecoverable=1") ||
		!strings.Contains(errOut, "UNRECOVERABLE "+repository.PackName(other)) {
		t.Fatalf("all replicas bad: exit %d, %q\n%s", code, got, errOut)
	}
	// A subset that does not hold the bad pack reads only the other one.
	var sub string
	for k := 1; k <= 2; k++ {
		if ss, _ := repository.ParseSubset(fmt.Sprintf("%d/2", k)); !ss.Contains(other) {
			sub = fmt.Sprintf("%d/2", k)
		}
	}
	if sub != "" {
		out, errOut, code = s.verify(t, "--read-data-subset", sub, "--class", "critical")
		if got := summary(t, out); code != 0 || !strings.Contains(got, " problems=0 ") {
			t.Fatalf("subset %s: exit %d, %q\n%s", sub, code, got, errOut)
		}
	}
}

func TestVerifyFlags(t *testing.T) {
	s := startStack(t)
	root := &cobra.Command{Use: "custos", SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().String("config", "custos.yaml", "configuration file")
	root.AddCommand(verifyCmd())
	root.SetOut(&bytes.Buffer{})
	for _, args := range [][]string{
		{"verify", "--read-data", "--read-data-subset", "1/2"},
		{"verify", "--read-data-subset", "3/2"},
		{"verify", "--class", "nope"},
	} {
		root.SetArgs(append(args, "--config", s.cfgPath))
		if err := root.ExecuteContext(context.Background()); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// A pack the targets hold but the index lost is found and put back in the index.
func TestVerifyReindexesLostPacks(t *testing.T) {
	s := startStack(t)
	kept := s.writePack(t, 1)
	lost := s.writePack(t, 2)
	if err := s.parts.Index.Remove(t.Context(), lost); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := s.verify(t, "--no-repair")
	if code != 2 || !strings.Contains(out, "index unindexed=1 reindexed=0") || !strings.Contains(errOut, "UNINDEXED pack "+lost) ||
		strings.Contains(errOut, kept) {
		t.Fatalf("--no-repair: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := s.parts.Index.Pack(t.Context(), lost); err == nil {
		t.Fatal("--no-repair indexed the lost pack")
	}
	out, errOut, code = s.verify(t)
	if code != 0 || !strings.Contains(out, "index unindexed=1 reindexed=1") || !strings.Contains(errOut, "REINDEXED pack "+lost) {
		t.Fatalf("repair: exit %d\n%s%s", code, out, errOut)
	}
	rec, err := s.parts.Index.Pack(t.Context(), lost)
	if err != nil || len(rec.Targets) != 2 {
		t.Fatalf("index entry after reindex = %+v, %v; want it on both targets", rec, err)
	}
	c := s.parts.KMS.Pseudonym("acme", "c-1")
	recs, err := s.parts.Index.Customer(t.Context(), c)
	if err != nil || len(recs) != 2 {
		t.Fatalf("customer entries after reindex = %d, %v; want both packs", len(recs), err)
	}
	out, errOut, code = s.verify(t)
	if code != 0 || !strings.Contains(out, "index unindexed=0 reindexed=0") || errOut != "" {
		t.Fatalf("second run: exit %d\n%s%s", code, out, errOut)
	}
}
