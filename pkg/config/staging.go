package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/custos-dev/custos/pkg/periodic"
	"github.com/custos-dev/custos/pkg/target"
)

// StagingCleanup removes the staging files that writers killed in the middle of a Put left on
// targets that stage Puts in files (fs targets keep them in .tmp). Zero values take the
// defaults.
//
// Only files last modified more than MaxAge ago are removed. A live Put moves its staging
// file's modification time forward with every write, so MaxAge bounds the longest pause inside
// one Put (a stalled reader, the final fsync, the clock skew between machines sharing an fs
// target), not the length of the Put; the default hour is far above any of these. Even a file
// removed under a live writer costs only that attempt: publishing it fails (there is no file to
// link) and the Put is retried whole; no partial object is ever published.
type StagingCleanup struct {
	MaxAge   time.Duration // default 1h
	Interval time.Duration // between passes; default 1h
	Logger   *slog.Logger
}

// Loop returns a loop that runs a pass over targets at Start and then every Interval; failed
// passes are logged as warnings.
func (s StagingCleanup) Loop(targets []target.Target) *periodic.Loop {
	s = s.withDefaults()
	return &periodic.Loop{
		Interval: s.Interval,
		Run:      func(ctx context.Context) error { return s.Run(ctx, targets) },
		OnError:  func(err error) { s.Logger.Warn("staging cleanup", "err", err) },
	}
}

// Run makes one pass: it calls CleanTemp on every target that offers it (through the stack and
// lazy wrappers) and logs at INFO how many files it removed, when any. A target that cannot be
// reached is an error; the others are still cleaned.
func (s StagingCleanup) Run(ctx context.Context, targets []target.Target) error {
	s = s.withDefaults()
	var errs []error
	for _, t := range targets {
		if err := ctx.Err(); err != nil {
			return err
		}
		c, ok := t.(interface {
			CleanTemp(olderThan time.Duration) (int, error)
		})
		if !ok {
			continue
		}
		n, err := c.CleanTemp(s.MaxAge)
		if n > 0 {
			s.Logger.Info("removed staging files of dead writers", "target", t.Name(), "files", n, "older_than", s.MaxAge)
		}
		if err != nil && !errors.Is(err, errors.ErrUnsupported) {
			errs = append(errs, fmt.Errorf("target %s: %w", t.Name(), err))
		}
	}
	return errors.Join(errs...)
}

func (s StagingCleanup) withDefaults() StagingCleanup {
	if s.MaxAge <= 0 {
		s.MaxAge = time.Hour
	}
	if s.Interval <= 0 {
		s.Interval = time.Hour
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	return s
}
