package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/broker"
	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/producer"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// cliSource is the ce-source of events the CLI publishes.
const cliSource = "//custos/cli"

// defaultUploadBucket is the object store bucket that holds files too large to send inline.
const defaultUploadBucket = "CUSTOS_UPLOADS"

func backupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Ask the workers for a backup",
	}
	cmd.AddCommand(backupNowCmd(), backupImportCmd()) // import.go
	return cmd
}

type backupNowOpts struct {
	class, tenant, customer string
	reason, requestedBy     string
	files                   []string
	bucket                  string
	inlineLimit             int
}

func backupNowCmd() *cobra.Command {
	var o backupNowOpts
	cmd := &cobra.Command{
		Use:   "now --class C --tenant T [--customer ID] --reason TEXT --requested-by WHO [--file KEY=PATH ...]",
		Short: "Publish a manual backup request and print its event id",
		Long: `Now publishes a ManualRequest event (docs/events.md) with the producer SDK and prints its
event id. Each --file KEY=PATH becomes a record with that key: files up to the inline limit travel
in the event; a larger file is put in the NATS object store (--bucket) and sent by reference, and
must then be the only --file. Records need --customer.

The worker writes every manual request it handles to the audit log (see "custos audit") with
--reason and --requested-by as given. They are free text kept for a year: write why and who,
never customer data (no names, e-mail addresses or customer ids).`,
		Example: `  custos backup now --config custos.yaml --class critical --tenant shop \
    --reason "before schema migration CHG-1042" --requested-by alice@ops
  custos backup now --config custos.yaml --class critical --tenant shop --customer c-0042 \
    --reason "restore drill" --requested-by bob@ops --file profile=./profile.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			cfgPath, _ := cmd.Flags().GetString("config")
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			nc, js, err := connectNATS(cfg, "custos-backup-now")
			if err != nil {
				return err
			}
			defer nc.Drain()
			id, err := publishManual(cmd.Context(), js, cfg, o)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), id)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.class, "class", "", "data class to back up (required)")
	f.StringVar(&o.tenant, "tenant", "", "tenant the data belongs to (required)")
	f.StringVar(&o.customer, "customer", "", "customer id; empty means every customer of the class")
	f.StringVar(&o.reason, "reason", "", "why the backup is needed; kept in the audit log, no customer data (required)")
	f.StringVar(&o.requestedBy, "requested-by", "", "who asks (your identity); kept in the audit log (required)")
	f.StringArrayVar(&o.files, "file", nil, "KEY=PATH: back up the file's bytes as record KEY (repeatable)")
	f.StringVar(&o.bucket, "bucket", defaultUploadBucket, "object store bucket for files over the inline limit")
	f.IntVar(&o.inlineLimit, "inline-limit", event.DefaultMaxInlineBytes, "largest file sent inside the event, in bytes")
	return cmd
}

// check refuses incomplete requests before anything is connected or sent.
func (o *backupNowOpts) check() error {
	var errs []error
	if strings.TrimSpace(o.reason) == "" {
		errs = append(errs, errors.New("--reason is required: say why this backup is needed (it is kept in the audit log; write no customer data in it)"))
	}
	if strings.TrimSpace(o.requestedBy) == "" {
		errs = append(errs, errors.New("--requested-by is required: say who asks for this backup (it is kept in the audit log)"))
	}
	if o.class == "" {
		errs = append(errs, errors.New("--class is required"))
	}
	if o.tenant == "" {
		errs = append(errs, errors.New("--tenant is required"))
	}
	if len(o.files) > 0 && o.customer == "" {
		errs = append(errs, errors.New("--file needs --customer: records are stored under one customer's key"))
	}
	for _, kv := range o.files {
		if k, p, ok := strings.Cut(kv, "="); !ok || k == "" || p == "" {
			errs = append(errs, fmt.Errorf("--file %q: give KEY=PATH", kv))
		}
	}
	return errors.Join(errs...)
}

// connectNATS connects to the broker the configuration names; the backup and audit commands
// need nothing else.
func connectNATS(cfg *config.Config, name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := cfg.ConnectNATS(nats.Name(name))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// publishManual builds the ManualRequest, uploads a large file first, publishes the event and
// returns its id.
func publishManual(ctx context.Context, js jetstream.JetStream, cfg *config.Config, o backupNowOpts) (string, error) {
	classes := make([]string, 0, len(cfg.Classes))
	for c := range cfg.Classes {
		classes = append(classes, c)
	}
	p, err := producer.New(js, cliSource, producer.WithLimits(event.Limits{Classes: classes}))
	if err != nil {
		return "", err
	}
	id, err := newEventID()
	if err != nil {
		return "", err
	}
	msg := &custosv1.ManualRequest{
		Meta:   &custosv1.Meta{EventId: id, Tenant: o.tenant, CustomerId: o.customer, DataClass: o.class},
		Reason: o.reason, RequestedBy: o.requestedBy,
	}
	for i, kv := range o.files {
		key, path, _ := strings.Cut(kv, "=")
		rec, err := fileRecord(ctx, js, o, id, i, key, path)
		if err != nil {
			return "", err
		}
		msg.Records = append(msg.Records, rec)
	}
	if _, err := p.PublishManualRequest(ctx, msg); err != nil {
		return "", fmt.Errorf("publish manual request: %w", err)
	}
	return id, nil
}

// fileRecord reads one --file: inline when small, else through the object store by reference.
func fileRecord(ctx context.Context, js jetstream.JetStream, o backupNowOpts, id string, i int, key, path string) (*custosv1.Record, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--file %s: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("--file %s: %s is not a regular file", key, path)
	}
	if fi.Size() <= int64(o.inlineLimit) {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--file %s: %w", key, err)
		}
		return &custosv1.Record{Key: key, Source: &custosv1.Record_Inline{Inline: data}}, nil
	}
	if len(o.files) != 1 {
		return nil, fmt.Errorf("--file %s is %d bytes, over the inline limit of %d: a file sent by reference must be the only --file (a worker takes one record by reference per event)",
			key, fi.Size(), o.inlineLimit)
	}
	obs, err := uploadBucket(ctx, js, o.bucket)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--file %s: %w", key, err)
	}
	defer f.Close()
	// The object name carries the event id, never the record key (which may name a customer).
	name := fmt.Sprintf("manual/%s/%d", id, i)
	info, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name, Description: "custos manual backup upload"}, f)
	if err != nil {
		return nil, fmt.Errorf("--file %s: upload to object store %s: %w", key, o.bucket, err)
	}
	sum, err := base64.URLEncoding.DecodeString(strings.TrimPrefix(info.Digest, "SHA-256="))
	if err != nil {
		return nil, fmt.Errorf("--file %s: object store digest %q: %w", key, info.Digest, err)
	}
	return &custosv1.Record{Key: key, Source: &custosv1.Record_Ref{Ref: &custosv1.RecordRef{
		Uri: "nats-object://" + o.bucket + "/" + name, Size: int64(info.Size), Sha256: hex.EncodeToString(sum)}}}, nil
}

// uploadBucket binds the upload bucket, creating it if needed (the admin's custos setup makes it
// where the operator may not). Uploads expire after the events stream's default max age, by
// which time the worker has read them or the event is gone.
func uploadBucket(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.ObjectStore, error) {
	return broker.EnsureObjectStore(ctx, js, jetstream.ObjectStoreConfig{Bucket: bucket,
		Description: "Custos: files of manual backup requests, read by reference", TTL: 7 * 24 * time.Hour})
}

// newEventID returns a random UUID (version 4).
func newEventID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}
