package config_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/internal/emulator"
)

// CheckReachable fails naming each class that cannot reach min_replicas of its targets, passes
// for classes that can while others are down, warns once per unreachable target, and passes
// for every class once the targets are back.
func TestCheckReachable(t *testing.T) {
	t.Parallel()
	offsite, mount := blockedMount(t)
	port := emulator.FreePort(t)
	targets := fmt.Sprintf(`
nats: {url: u}
keys: {file: k}
targets:
  - {name: local, kind: fs, path: data/local}
  - {name: offsite, kind: fs, path: %q}
  - {name: cloud, kind: gcs, endpoint: %q, bucket: custos-backups}
`, offsite, gcsEndpoint(port))
	c, _ := load(t, targets+`
classes:
  spread: {targets: [local, offsite, cloud], min_replicas: 1}
  pair: {targets: [local, offsite], min_replicas: 2}
  all: {targets: [local, cloud]}
`)
	ctx := t.Context()
	ts, err := c.OpenTargets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	closeAll(t, ts)

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	start := time.Now()
	err = c.CheckReachable(ctx, ts, log)
	if err == nil {
		t.Fatal("CheckReachable passed with two of three targets down")
	}
	msg := err.Error()
	if !strings.Contains(msg, "class pair reaches 1 of its 2 targets") || !strings.Contains(msg, "class all reaches 1 of its 2 targets") ||
		strings.Contains(msg, "spread") {
		t.Fatalf("CheckReachable = %q, want errors naming classes pair and all only", msg)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("CheckReachable took %s for targets that refuse at once", d)
	}
	out := logs.String()
	for _, name := range []string{"fs:offsite", "gcs:cloud"} {
		if strings.Count(out, "target="+name) != 1 {
			t.Errorf("want one warning for %s in:\n%s", name, out)
		}
	}
	if strings.Contains(out, "fs:local") || strings.Count(out, "level=WARN") != 2 {
		t.Errorf("want warnings for the unreachable targets only:\n%s", out)
	}

	// A worker whose classes can all reach min_replicas starts while the targets are down.
	spreadOnly, _ := load(t, targets+"classes: {spread: {targets: [local, offsite, cloud], min_replicas: 1}}\n")
	if err := spreadOnly.CheckReachable(ctx, ts, nil); err != nil {
		t.Fatalf("CheckReachable for a class with one reachable target of min_replicas 1: %v", err)
	}

	mount()
	startGCS(t, port, "custos-backups")
	deadline := time.Now().Add(30 * time.Second) // the lazy fs target tries again every 5s
	for {
		err := c.CheckReachable(ctx, ts, nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CheckReachable once the targets are back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
