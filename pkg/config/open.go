package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/natsauth"
	"github.com/custos-dev/custos/pkg/repair"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/snapshot"
	"github.com/custos-dev/custos/pkg/target"
)

// Parts are the connected parts a configuration describes.
type Parts struct {
	NC      *nats.Conn
	JS      jetstream.JetStream
	KMS     *keys.Keyring
	Keys    *keys.KVStore
	Index   *catalog.Index
	Repairs *repair.Queue
	Targets []target.Target
	// Snapshots holds snapshot jobs and committed snapshots; Records is the dedup cache.
	Snapshots *snapshot.Store
	Records   *snapshot.Records
}

// OpenOption changes how Open opens the parts.
type OpenOption func(*openOptions)

type openOptions struct{ replicas int }

// WithReplicas makes Open, and everything later opened through Parts.JS, create streams and
// buckets with n replicas (broker.Replicated): `custos setup --replicas n` on a new cluster.
func WithReplicas(n int) OpenOption { return func(o *openOptions) { o.replicas = n } }

// Open connects to NATS, loads the key file, opens the key store, the catalog and the targets.
func (c *Config) Open(ctx context.Context, name string, log *slog.Logger, options ...OpenOption) (*Parts, error) {
	var o openOptions
	for _, opt := range options {
		opt(&o)
	}
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
	var err error
	if p.NC, err = c.ConnectNATS(opts...); err != nil {
		return nil, err
	}
	fail := func(err error) (*Parts, error) {
		p.Close()
		return nil, err
	}
	if p.JS, err = jetstream.New(p.NC); err != nil {
		return fail(err)
	}
	p.JS = broker.Replicated(p.JS, o.replicas)
	if p.KMS, err = c.OpenKeyring(ctx, c.Keys.Create); err != nil {
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

// ConnectNATS connects to the broker with the configured credential (creds_file or
// seed_file) besides opts.
func (c *Config) ConnectNATS(opts ...nats.Option) (*nats.Conn, error) {
	if c.NATS.CredsFile != "" && c.NATS.SeedFile != "" {
		return nil, errors.New("nats: give creds_file or seed_file, not both")
	}
	if c.NATS.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.Path(c.NATS.CredsFile)))
	}
	if c.NATS.SeedFile != "" {
		o, err := natsauth.ConnectOption(c.Path(c.NATS.SeedFile))
		if err != nil {
			return nil, err
		}
		opts = append(opts, o)
	}
	nc, err := nats.Connect(c.NATS.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", c.NATS.URL, err)
	}
	return nc, nil
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
	if p.KMS != nil {
		errs = append(errs, p.KMS.Close())
	}
	if p.NC != nil {
		errs = append(errs, p.NC.Drain())
	}
	return errors.Join(errs...)
}

// Repository returns a reader of the system of record over p's targets.
func (p *Parts) Repository() *repository.Reader {
	readers := target.Readers(p.Targets)
	return repository.NewReader(repository.NewOpener(p.KMS, p.KMS.Fingerprint(), readers...), readers...)
}

// Offline are the parts that need no broker: the key file and the targets. Restores and
// rebuilds from a target use them (docs/design.md section 11).
type Offline struct {
	KMS     *keys.Keyring
	Targets []target.Target
}

// OpenOffline loads the key file (never creating one) and opens the targets, without NATS.
func (c *Config) OpenOffline(ctx context.Context) (*Offline, error) {
	kms, err := c.OpenKeyring(ctx, false)
	if err != nil {
		return nil, err
	}
	ts, err := c.OpenTargets(ctx)
	if err != nil {
		kms.Close()
		return nil, err
	}
	return &Offline{KMS: kms, Targets: ts}, nil
}

// Close closes the targets.
func (o *Offline) Close() error {
	var errs []error
	for _, t := range o.Targets {
		errs = append(errs, t.Close())
	}
	if o.KMS != nil {
		errs = append(errs, o.KMS.Close())
	}
	return errors.Join(errs...)
}

// Opener returns an opener of catalog objects with the key file.
func (o *Offline) Opener() *repository.Opener {
	readers := target.Readers(o.Targets)
	return repository.NewOpener(o.KMS, o.KMS.Fingerprint(), readers...)
}

// FindTarget returns the target named name, by its configured name ("s3") or its full name
// ("s3:s3"), and the others.
func FindTarget(ts []target.Target, name string) (target.Target, []target.Target, error) {
	var found target.Target
	var others []target.Target
	var names []string
	for _, t := range ts {
		names = append(names, t.Name())
		_, short, _ := strings.Cut(t.Name(), ":")
		if found == nil && (t.Name() == name || short == name) {
			found = t
			continue
		}
		others = append(others, t)
	}
	if found == nil {
		return nil, nil, fmt.Errorf("no target named %q in the configuration (targets: %s)", name, strings.Join(names, ", "))
	}
	return found, others, nil
}
