package repository_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/mem"
)

// noLock is a target that, like an rclone remote, refuses any Put asking for a lock.
type noLock struct{ target.Target }

func (n noLock) Put(ctx context.Context, name string, r io.ReadSeeker, size int64, opts target.PutOptions) error {
	if !opts.RetainUntil.IsZero() || opts.LegalHold {
		return target.ErrNoLock
	}
	return n.Target.Put(ctx, name, r, size, opts)
}

// Key envelopes go to every target with a retention as a safeguard; a target that cannot lock
// stores them unlocked instead of failing the rotation.
func TestEnvelopesOnATargetThatCannotLock(t *testing.T) {
	ctx := context.Background()
	plain := noLock{mem.New()}
	envs := map[string]keys.Envelope{"p0123456789abcdef0123456789abcdef": {KEK: "local-00000000", DEK: []byte("wrapped")}}
	rep := repository.WriteEnvelopes(ctx, []target.Target{plain}, envs, target.PutOptions{RetainUntil: time.Now().Add(time.Hour)})
	if rep.Written != 1 || len(rep.Failures) != 0 {
		t.Fatalf("report %+v, want the envelope written unlocked", rep)
	}
	if _, err := plain.Stat(ctx, repository.EnvelopeName("local-00000000", "p0123456789abcdef0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
}
