package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/keys"
)

// run runs one CLI command against the stack's configuration and returns its stdout, stderr
// and exit code.
func (s *stack) runCaptured(t *testing.T, sub *cobra.Command, args ...string) (string, string, int) {
	t.Helper()
	root := &cobra.Command{Use: "custos", SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().String("config", "custos.yaml", "configuration file")
	root.AddCommand(sub)
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append(args, "--config", s.cfgPath))
	// The commands print with fmt to the process's stdout: capture it.
	stdout := os.Stdout
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout = w
	var captured bytes.Buffer
	read := make(chan struct{})
	go func() { // drain while the command runs: a full pipe would block it
		captured.ReadFrom(r)
		close(read)
	}()
	err = root.ExecuteContext(context.Background())
	w.Close()
	<-read
	r.Close()
	os.Stdout = stdout
	code := 0
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case err != nil:
		t.Fatalf("%v: %v\n%s", args, err, errOut.String())
	}
	return captured.String() + out.String(), errOut.String(), code
}

// readTree returns every file under dir by its relative path.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// Backup, rotate the KEK twice, destroy the retired versions: every backup still restores
// byte-identical, through the broker and from one target alone, although the manifests in the
// targets carry data keys wrapped by a KEK that no longer exists.
func TestKeysRotateTwiceThenDestroy(t *testing.T) {
	s := startStack(t)
	s.writePack(t, 1)
	s.writePack(t, 2)
	before := filepath.Join(s.dir, "restore-before")
	if out, errOut, code := s.runCaptured(t, restoreCmd(), "restore", "--all", "--out", before); code != 0 {
		t.Fatalf("restore before: exit %d\n%s%s", code, out, errOut)
	}
	want := readTree(t, before)
	if len(want) == 0 {
		t.Fatal("nothing restored before the rotation")
	}
	s.parts.Close() // this process's key store predates the rotation

	keyPath := filepath.Join(s.dir, "custos.key")
	first, err := keys.LoadKeyFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		out, errOut, code := s.runCaptured(t, keysCmd(), "keys", "rotate")
		if code != 0 || !strings.Contains(out, "keys rotated") || !strings.Contains(out, "failures=0") {
			t.Fatalf("rotation %d: exit %d\n%s%s", i+1, code, out, errOut)
		}
	}
	out, errOut, code := s.runCaptured(t, keysCmd(), "keys", "destroy-retired")
	if code != 0 || !strings.Contains(out, "keys destroyed=2") {
		t.Fatalf("destroy-retired: exit %d\n%s%s", code, out, errOut)
	}
	now, err := keys.LoadKeyFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if now.Holds(first.KeyID()) {
		t.Fatal("the first KEK is still in the key file")
	}
	for _, args := range [][]string{
		{"restore", "--all", "--out", filepath.Join(s.dir, "restore-after")},
		{"restore", "--all", "--from-target", "a", "--out", filepath.Join(s.dir, "restore-offline")},
	} {
		out, errOut, code := s.runCaptured(t, restoreCmd(), args...)
		if code != 0 || !strings.Contains(out, "failures=0") {
			t.Fatalf("%v after the rotations: exit %d\n%s%s", args, code, out, errOut)
		}
		got := readTree(t, args[len(args)-1])
		if len(got) != len(want) {
			t.Fatalf("%v restored %d files, want %d", args, len(got), len(want))
		}
		for name, data := range want {
			if got[name] != data {
				t.Fatalf("%v: %s differs after the rotations", args, name)
			}
		}
	}
}

// A retired KEK is destroyed only once every live key's envelope is in every target: with a
// target down, rotate reports the missing envelopes and destroy-retired destroys nothing.
func TestKeysDestroyRefusedWhileATargetIsDown(t *testing.T) {
	s := startStack(t)
	s.writePack(t, 1)
	s.parts.Close()
	b := filepath.Join(s.dir, "b")
	if err := os.Rename(b, b+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, nil, 0o600); err != nil { // a file where the target's root should be
		t.Fatal(err)
	}
	out, errOut, code := s.runCaptured(t, keysCmd(), "keys", "rotate")
	if code != 2 || !strings.Contains(out, "envelopes=2 failures=2") { // every envelope is missing from b
		t.Fatalf("rotate with target b down: exit %d\n%s%s", code, out, errOut)
	}
	keyPath := filepath.Join(s.dir, "custos.key")
	retired, err := keys.RetiredKEKs(keyPath)
	if err != nil || len(retired) != 1 {
		t.Fatalf("retired KEKs after the rotation: %v, %v", retired, err)
	}
	out, errOut, code = s.runCaptured(t, keysCmd(), "keys", "destroy-retired")
	if code != 2 {
		t.Fatalf("destroy-retired with target b down: exit %d\n%s%s", code, out, errOut)
	}
	if still, err := keys.RetiredKEKs(keyPath); err != nil || len(still) != 1 || still[0] != retired[0] {
		t.Fatalf("retired KEKs after a refused destroy: %v, %v; want %v kept", still, err, retired)
	}
	// Back: the envelopes are written, and then the old KEK goes.
	if err := os.Remove(b); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(b+".away", b); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = s.runCaptured(t, keysCmd(), "keys", "destroy-retired")
	if code != 0 || !strings.Contains(out, "keys destroyed=1") {
		t.Fatalf("destroy-retired with every target up: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = s.runCaptured(t, restoreCmd(), "restore", "--all", "--from-target", "b", "--out", filepath.Join(s.dir, "out-b"))
	if code != 0 || !strings.Contains(out, "failures=0") {
		t.Fatalf("restore from target b after the destroy: exit %d\n%s%s", code, out, errOut)
	}
}
