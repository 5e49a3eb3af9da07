package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/target"
)

// Parts are the connected parts a configuration describes.
type Parts struct {
	NC      *nats.Conn
	JS      jetstream.JetStream
	KMS     *keys.LocalKMS
	Keys    *keys.KVStore
	Index   *catalog.Index
	Repairs *repair.Queue
	Targets []target.Target
	// Snapshots holds snapshot jobs and committed snapshots; Records is the dedup cache.
	Snapshots *snapshot.Store
	Records   *snapshot.Records
}

// Open connects to NATS, loads the key file, opens the key store, the catalog and the targets.
func (c *Config) Open(ctx context.Context, name string, log *slog.Logger) (*Parts, error) {
	p := &Parts{}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("nats reconnected") })}
	if c.NATS.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.Path(c.NATS.CredsFile)))
	}
	var err error
	if p.NC, err = nats.Connect(c.NATS.URL, opts...); err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", c.NATS.URL, err)
	}
	fail := func(err error) (*Parts, error) {
		p.Close()
		return nil, err
	}
	if p.JS, err = jetstream.New(p.NC); err != nil {
		return fail(err)
	}
	if c.Keys.Create {
		p.KMS, err = keys.LoadOrCreateKeyFile(c.Path(c.Keys.File))
	} else {
		p.KMS, err = keys.LoadKeyFile(c.Path(c.Keys.File))
	}
	if err != nil {
		return fail(err)
	}
	if p.Keys, err = keys.NewKVStore(ctx, p.JS, p.KMS); err != nil {
		return fail(err)
	}
	if p.Index, err = catalog.Open(ctx, p.JS, 1); err != nil {
		return fail(err)
	}
	if p.Repairs, err = repair.OpenQueue(ctx, p.JS, 1); err != nil {
		return fail(err)
	}
	if p.Snapshots, err = snapshot.Open(ctx, p.JS, 1); err != nil {
		return fail(err)
	}
	if p.Records, err = snapshot.OpenRecords(ctx, p.JS, 1); err != nil {
		return fail(err)
	}
	if p.Targets, err = c.OpenTargets(ctx); err != nil {
		return fail(err)
	}
	return p, nil
}

// Close releases every part. Safe on a partly opened Parts.
func (p *Parts) Close() error {
	var errs []error
	for _, t := range p.Targets {
		errs = append(errs, t.Close())
	}
	if p.Keys != nil {
		errs = append(errs, p.Keys.Close())
	}
	if p.NC != nil {
		errs = append(errs, p.NC.Drain())
	}
	return errors.Join(errs...)
}
