package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestCommittedCodeIsCurrent regenerates proto/ into a temporary directory, twice, and compares
// with the committed files: the output must be stable and the committed code up to date.
func TestCommittedCodeIsCurrent(t *testing.T) {
	const src = "custos/v1/events.proto"
	proto := filepath.Join("..", "..", "..", "proto")
	var outs [2][]byte
	for i := range outs {
		out := t.TempDir()
		if err := run(context.Background(), []string{proto}, out, "paths=source_relative", []string{src}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(out, "custos", "v1", "events.pb.go"))
		if err != nil {
			t.Fatal(err)
		}
		outs[i] = b
	}
	if !bytes.Equal(outs[0], outs[1]) {
		t.Fatal("two runs produced different code")
	}
	committed, err := os.ReadFile(filepath.Join(proto, "custos", "v1", "events.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(committed, outs[0]) {
		t.Fatal("proto/custos/v1/events.pb.go is stale: run make generate")
	}
}

func TestCompileErrorReported(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.proto"), []byte("syntax = \"proto3\";\nmessage M { strin x = 1; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{dir}, t.TempDir(), "paths=source_relative", []string{"bad.proto"}); err == nil {
		t.Fatal("a broken .proto compiled")
	}
}
