package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/catalog"
	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/devstack"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/replica"
	"github.com/custos-dev/custos/pkg/repository"
	"github.com/custos-dev/custos/pkg/restore"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/worker"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

type demoOpts struct {
	dir       string
	customers int
	events    int
	workers   int
	workerBin string
	clouds    bool
}

func demoCmd() *cobra.Command {
	var o demoOpts
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole pipeline on the embedded default and verify every customer",
		Long: `demo starts an embedded JetStream server and worker processes, publishes a small shop's
transactions (plus one large item and one erasure request), waits until every event is durable,
drains the workers, restores every customer from the targets, compares byte for byte, checks
that the targets hold no plaintext, and prints a one-line summary. Everything it writes is under
--dir. It exits non-zero if anything fails to verify.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDemo(cmd.Context(), o) },
	}
	exe, _ := os.Executable()
	cmd.Flags().StringVar(&o.dir, "dir", ".demo", "directory for all demo state (recreated)")
	cmd.Flags().IntVar(&o.customers, "customers", 300, "customers of the sample shop")
	cmd.Flags().IntVar(&o.events, "events", 3000, "post-transaction events to publish")
	cmd.Flags().IntVar(&o.workers, "workers", 2, "worker processes to start")
	cmd.Flags().BoolVar(&o.clouds, "clouds", false, "replicate to local disk plus one S3, one GCS and one Azure emulator and an SFTP server (installed by 'make emulators')")
	cmd.Flags().StringVar(&o.workerBin, "worker-bin", filepath.Join(filepath.Dir(exe), "custos-worker"), "worker binary")
	return cmd
}

const demoTenant = "demo-shop"

// demoTargets are the local targets of the demo; with --clouds only the first is kept and the
// emulators are added.
var demoTargets = []string{"primary", "secondary", "offsite"}

func demoConfig(url string, clouds []*devstack.Cloud) (string, int) {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by 'custos demo'.\nnats:\n  url: %s\nkeys:\n  file: keys/custos.key\n  create: true\ntargets:\n", url)
	local := demoTargets
	if len(clouds) > 0 {
		local = demoTargets[:1]
	}
	names := slices.Clone(local)
	for _, t := range local {
		fmt.Fprintf(&b, "  - name: %s\n    kind: fs\n    path: targets/%s\n", t, t)
	}
	for _, c := range clouds {
		names = append(names, c.Kind)
		fmt.Fprintf(&b, "  - name: %s\n%s", c.Kind, c.Target)
	}
	// The classes, their targets and replicas come from the policy file written beside it.
	b.WriteString("policy: policy.yaml\n")
	b.WriteString("worker:\n  pack_max_delay: 100ms\n  spool_dir: spool\n  drain_timeout: 30s\n")
	return b.String(), len(names)
}

// demoPolicy is the demo's policy: the default policy's classes, schedules, RPO and RTO, on the
// demo's targets and without object lock (the local disks and the SFTP server cannot lock, and
// the demo's S3 bucket is not created with object lock). With only local disks it cannot meet
// 3-2-1, and says so with an override.
func demoPolicy(clouds []*devstack.Cloud) string {
	var b strings.Builder
	b.WriteString("# Written by 'custos demo': the default policy's classes on the demo's targets.\n")
	b.WriteString("version: 1\ntenant: " + demoTenant + "\ntimezone: UTC\ntargets:\n")
	local := demoTargets
	if len(clouds) > 0 {
		local = demoTargets[:1]
	}
	names := slices.Clone(local)
	for i, t := range local {
		fmt.Fprintf(&b, "  - {name: %s, kind: fs, offsite: %t}\n", t, i == len(local)-1 && len(clouds) == 0)
	}
	for _, c := range clouds {
		kind := c.Kind
		if kind != "s3" && kind != "gcs" && kind != "azure" {
			kind = "rclone" // the SFTP server is reached through rclone
		}
		names = append(names, c.Kind)
		fmt.Fprintf(&b, "  - {name: %s, kind: %s, offsite: %t}\n", c.Kind, kind, c.Kind != "s3")
	}
	override := ""
	if len(clouds) == 0 {
		override = "    override_321: \"demo: local disks only, one kind of storage\"\n"
	}
	b.WriteString("classes:\n")
	for _, c := range []struct{ name, cron, method, retention, rpo, rto, extra string }{
		{"critical", "0 2 * * *", "incremental", "{min: 30d, daily: 30}", "48h", "48h", ""},
		{"important", "0 3 * * 0", "incremental", "{min: 90d, weekly: 13}", "7d", "72h", ""},
		{"non_essential", "0 4 1 * *", "full", "{min: 180d, monthly: 6}", "30d", "7d",
			"    override_rpo: \"seed 002: monthly backups and a 30-day RPO; months of 31 days leave a 31-day gap\"\n"},
	} {
		fmt.Fprintf(&b, "  %s:\n    schedules:\n      - {name: scheduled, cron: \"%s\", method: %s}\n"+
			"    retention: %s\n    targets: [%s]\n    immutability: {mode: none}\n    rpo: %s\n    rto: %s\n%s%s",
			c.name, c.cron, c.method, c.retention, strings.Join(names, ", "), c.rpo, c.rto, override, c.extra)
	}
	return b.String()
}

// startClouds starts the three cloud emulators and an SFTP server under dir/clouds and exports their local-only
// credentials to this process (which restores) and to the workers it starts.
func startClouds(ctx context.Context, dir string) ([]*devstack.Cloud, error) {
	starts := []func(ctx context.Context, dir string) (*devstack.Cloud, error){
		func(ctx context.Context, dir string) (*devstack.Cloud, error) {
			return devstack.StartS3(ctx, dir, "custos-demo")
		},
		func(ctx context.Context, dir string) (*devstack.Cloud, error) {
			return devstack.StartGCS(ctx, dir, "custos-demo")
		},
		func(ctx context.Context, dir string) (*devstack.Cloud, error) {
			return devstack.StartAzure(ctx, dir, "custos-demo")
		},
		func(ctx context.Context, dir string) (*devstack.Cloud, error) { return devstack.StartSFTP(ctx, dir) },
	}
	var clouds []*devstack.Cloud
	for i, start := range starts {
		c, err := start(ctx, filepath.Join(dir, "clouds", strconv.Itoa(i)))
		if err != nil {
			stopClouds(clouds)
			return nil, err
		}
		clouds = append(clouds, c)
		for _, kv := range c.Env {
			k, v, _ := strings.Cut(kv, "=")
			os.Setenv(k, v)
		}
	}
	return clouds, nil
}

func stopClouds(clouds []*devstack.Cloud) {
	for _, c := range clouds {
		c.Stop()
	}
}

func runDemo(ctx context.Context, o demoOpts) error {
	start := time.Now()
	if _, err := os.Stat(o.workerBin); err != nil {
		return fmt.Errorf("worker binary %s not found (run 'make build'): %w", o.workerBin, err)
	}
	if err := os.RemoveAll(o.dir); err != nil {
		return err
	}
	for _, d := range []string{"nats", "keys", "logs", "spool", "restore", "targets"} {
		if err := os.MkdirAll(filepath.Join(o.dir, d), 0o700); err != nil {
			return err
		}
	}
	storeKey, err := devstack.LoadOrCreateStoreKey(filepath.Join(o.dir, "keys", "jetstream.key"))
	if err != nil {
		return err
	}
	ns, err := devstack.StartNATS(filepath.Join(o.dir, "nats"), "127.0.0.1", -1, devstack.WithStoreKey(storeKey))
	if err != nil {
		return err
	}
	defer ns.Stop()
	say("embedded JetStream at %s", ns.URL())
	var clouds []*devstack.Cloud
	if o.clouds {
		if clouds, err = startClouds(ctx, o.dir); err != nil {
			return err
		}
		defer stopClouds(clouds)
		for _, c := range clouds {
			say("%s emulator at %s", c.Kind, c.Endpoint)
		}
	}
	cfgPath := filepath.Join(o.dir, "custos.yaml")
	cfgText, replicas := demoConfig(ns.URL(), clouds)
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.dir, "policy.yaml"), []byte(demoPolicy(clouds)), 0o600); err != nil {
		return err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	// Create the key file before the workers start so they do not race to create it.
	if _, err := keys.LoadOrCreateKeyFile(cfg.Path(cfg.Keys.File)); err != nil {
		return err
	}
	parts, err := cfg.Open(ctx, "custos-demo", logger())
	if err != nil {
		return err
	}
	defer parts.Close()
	if err := worker.EnsureStreams(ctx, parts.JS); err != nil {
		return err
	}

	procs, err := startWorkers(o, cfgPath)
	defer stopWorkers(procs)
	if err != nil {
		return err
	}
	say("started %d workers", len(procs))

	shop := newShop(o.customers)
	published, err := shop.run(ctx, parts.JS, o.events)
	if err != nil {
		return err
	}
	say("published %d events; waiting until every one is durable", published)
	if err := waitDrained(ctx, parts.JS); err != nil {
		return err
	}
	// Erase one customer once its data is stored: its copies must become unreadable.
	if err := shop.erase(ctx, parts.JS); err != nil {
		return err
	}
	published++
	if err := waitDrained(ctx, parts.JS); err != nil {
		return err
	}
	if err := stopWorkers(procs); err != nil {
		return err
	}
	procs = nil
	say("workers drained and stopped")

	if n, err := dlqCount(ctx, parts.JS); err != nil || n > 0 {
		return fmt.Errorf("dead-letter stream holds %d events (see 'custos dlq --config %s'): %v", n, cfgPath, err)
	}
	readers := target.Readers(parts.Targets)
	out := filepath.Join(o.dir, "restore")
	r := &restore.Restorer{Index: parts.Index, Targets: readers, Keys: parts.Keys, Pseudonyms: parts.KMS, Logger: logger()}
	rep, err := r.All(ctx, restore.Options{Out: out})
	if err != nil {
		return err
	}
	if !rep.OK() {
		return fmt.Errorf("restore incomplete: %d failure(s), the first: %s", len(rep.Failures), rep.Failures[0])
	}
	verified, err := shop.verify(out)
	if err != nil {
		return err
	}
	if len(rep.Erased) != 1 {
		return fmt.Errorf("restore skipped %d erased customers, want 1", len(rep.Erased))
	}
	// The targets are the record: one target and the key file restore the same, with no broker.
	if err := offlineRestore(ctx, parts, shop, filepath.Join(o.dir, "restore-offline")); err != nil {
		return err
	}
	stored, files, err := scanTargets(filepath.Join(o.dir, "targets"), shop.secrets())
	if err != nil {
		return err
	}
	packs, err := parts.Index.Packs(ctx)
	if err != nil {
		return err
	}
	if o.clouds {
		// The emulators keep their data on disk under --dir: it must hold no plaintext either.
		if _, _, err := scanTargets(filepath.Join(o.dir, "clouds"), shop.secrets()); err != nil {
			return err
		}
		if err := verifyEveryReplica(ctx, parts.Targets, packs); err != nil {
			return err
		}
		say("every pack and manifest verified by checksum in all %d targets", len(parts.Targets))
	}
	fmt.Printf("DEMO OK events=%d packs=%d objects=%d bytes_stored=%d replicas=%d customers_restored=%d customers_verified=%d customers_erased=%d elapsed=%s\n",
		published, len(packs), files, stored, replicas, rep.Customers, verified, len(rep.Erased), time.Since(start).Round(time.Millisecond))
	return nil
}

func startWorkers(o demoOpts, cfgPath string) ([]*exec.Cmd, error) {
	var procs []*exec.Cmd
	for i := 1; i <= o.workers; i++ {
		logf, err := os.Create(filepath.Join(o.dir, "logs", fmt.Sprintf("worker-%d.log", i)))
		if err != nil {
			return procs, err
		}
		c := exec.Command(o.workerBin, "--config", cfgPath, "--name", fmt.Sprintf("worker-%d", i))
		c.Stdout, c.Stderr = logf, logf // the environment (cloud credentials) is inherited
		if err := c.Start(); err != nil {
			return procs, fmt.Errorf("start worker: %w", err)
		}
		procs = append(procs, c)
	}
	return procs, nil
}

// stopWorkers sends SIGTERM and waits for a clean exit.
func stopWorkers(procs []*exec.Cmd) error {
	var errs []error
	for _, p := range procs {
		_ = p.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		done := make(chan error, 1)
		go func() { done <- p.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, fmt.Errorf("worker %d: %w", p.Process.Pid, err))
			}
		case <-time.After(90 * time.Second):
			_ = p.Process.Kill()
			errs = append(errs, fmt.Errorf("worker %d did not drain in time", p.Process.Pid))
		}
	}
	return errors.Join(errs...)
}

// waitDrained waits until the shared consumer has no pending and no unacknowledged events.
func waitDrained(ctx context.Context, js jetstream.JetStream) error {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		c, err := js.Consumer(ctx, event.StreamName, "custos-workers")
		if err == nil {
			info, err := c.Info(ctx)
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				s, err := js.Stream(ctx, event.StreamName)
				if err == nil && info.AckFloor.Stream >= s.CachedInfo().State.LastSeq {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return errors.New("events were not all durable within 5 minutes")
}

func dlqCount(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	s, err := js.Stream(ctx, event.DLQStreamName)
	if err != nil {
		return 0, err
	}
	return s.CachedInfo().State.Msgs, nil
}

// scanTargets sums what the targets hold and fails if any object contains a plaintext marker.
func scanTargets(root string, secrets [][]byte) (int64, int, error) {
	var total int64
	var files int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range secrets {
			if bytes.Contains(b, s) {
				return fmt.Errorf("plaintext found in %s", path)
			}
		}
		total += int64(len(b))
		files++
		return nil
	})
	return total, files, err
}

// shop is the sample producer: customers whose profiles, orders and preferences change.
type shop struct {
	customers int
	rng       *rand.Rand
	expected  map[string][]byte // customer \x00 record key -> latest bytes
	erased    string
}

func newShop(customers int) *shop {
	return &shop{customers: customers, rng: rand.New(rand.NewPCG(42, 7)), expected: map[string][]byte{}}
}

func customerID(i int) string { return fmt.Sprintf("cust-%04d", i) }

func (s *shop) run(ctx context.Context, js jetstream.JetStream, events int) (int, error) {
	p, err := producer.New(js, "urn:custos:demo-shop")
	if err != nil {
		return 0, err
	}
	classes := []struct{ key, class string }{
		{"profile", "critical"}, {"orders", "critical"}, {"loyalty", "important"}, {"newsletter", "non_essential"},
	}
	now := time.Now().UTC()
	for i := 0; i < events; i++ {
		c := customerID(1 + s.rng.IntN(s.customers))
		k := classes[s.rng.IntN(len(classes))]
		key := k.key
		if key == "orders" {
			key = fmt.Sprintf("orders/%d", s.rng.IntN(5))
		}
		data := []byte(fmt.Sprintf(`{"customer":%q,"email":"%s@example.com","record":%q,"version":%d,"note":%q}`,
			c, c, key, i, strings.Repeat("x", s.rng.IntN(900))))
		ev := &custosv1.PostTransaction{
			Meta: &custosv1.Meta{EventId: fmt.Sprintf("demo-%06d", i), Time: timestamppb.New(now.Add(time.Duration(i) * time.Millisecond)),
				Tenant: demoTenant, CustomerId: c, DataClass: k.class},
			Record:        &custosv1.Record{Key: key, ContentType: "application/json", Source: &custosv1.Record_Inline{Inline: data}},
			TransactionId: fmt.Sprintf("tx-%d", i),
		}
		if _, err := p.PublishPostTransactionAsync(ctx, ev); err != nil {
			return i, err
		}
		s.expected[c+"\x00"+key] = data
	}
	// One large item goes by reference through the object store.
	large, err := s.large(ctx, js, p, now.Add(time.Duration(events)*time.Millisecond))
	if err != nil {
		return events, err
	}
	if err := p.Flush(ctx); err != nil {
		return events, err
	}
	return events + large, nil
}

func (s *shop) large(ctx context.Context, js jetstream.JetStream, p *producer.Producer, at time.Time) (int, error) {
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "demo-uploads"})
	if err != nil {
		return 0, err
	}
	c := customerID(7)
	var b bytes.Buffer
	for b.Len() < 8<<20 {
		fmt.Fprintf(&b, "%s,%d,order-history-line,%d\n", c, b.Len(), s.rng.Int64())
	}
	data := b.Bytes()
	if _, err := obs.PutBytes(ctx, "history-export.csv", data); err != nil {
		return 0, err
	}
	ev := &custosv1.PostTransaction{
		Meta: &custosv1.Meta{EventId: "demo-large-1", Time: timestamppb.New(at), Tenant: demoTenant, CustomerId: c, DataClass: "important"},
		Record: &custosv1.Record{Key: "exports/history.csv", ContentType: "text/csv",
			Source: &custosv1.Record_Ref{Ref: &custosv1.RecordRef{Uri: "nats-object://demo-uploads/history-export.csv", Size: int64(len(data))}}},
	}
	if _, err := p.PublishPostTransaction(ctx, ev); err != nil {
		return 0, err
	}
	s.expected[c+"\x00exports/history.csv"] = data
	return 1, nil
}

// erase asks for one customer's erasure and drops it from what the restore must bring back.
func (s *shop) erase(ctx context.Context, js jetstream.JetStream) error {
	p, err := producer.New(js, "urn:custos:demo-shop")
	if err != nil {
		return err
	}
	s.erased = customerID(13)
	_, err = p.PublishDeletionRequest(ctx, &custosv1.DeletionRequest{
		Meta:        &custosv1.Meta{EventId: "demo-erase-1", Time: timestamppb.Now(), Tenant: demoTenant, CustomerId: s.erased},
		RequestedBy: "demo", LegalBasis: "GDPR Art. 17",
	})
	for k := range s.expected {
		if strings.HasPrefix(k, s.erased+"\x00") {
			delete(s.expected, k)
		}
	}
	return err
}

// verify compares every expected record with the restored file and checks that the erased
// customer did not come back. It returns the number of customers verified.
func (s *shop) verify(out string) (int, error) {
	customers := map[string]bool{}
	for k, want := range s.expected {
		c, key, _ := strings.Cut(k, "\x00")
		got, err := os.ReadFile(restore.Path(out, demoTenant, c, key))
		if err != nil {
			return 0, fmt.Errorf("customer %s record %s not restored: %w", c, key, err)
		}
		if !bytes.Equal(got, want) {
			return 0, fmt.Errorf("customer %s record %s differs from what was published", c, key)
		}
		customers[c] = true
	}
	if _, err := os.Stat(filepath.Dir(restore.Path(out, demoTenant, s.erased, "x"))); err == nil {
		return 0, fmt.Errorf("erased customer %s was restored", s.erased)
	}
	return len(customers), nil
}

// secrets are byte strings that appear in every record and must never appear in a target.
func (s *shop) secrets() [][]byte {
	return [][]byte{[]byte(demoTenant), []byte("cust-0"), []byte("@example.com"), []byte("order-history-line")}
}

var _ = nats.Header{}

// verifyEveryReplica checks that every indexed pack and its manifest are in every target with the
// checksum the index and manifest name.
func verifyEveryReplica(ctx context.Context, targets []target.Target, packs []catalog.PackRecord) error {
	for _, pk := range packs {
		sum, err := hex.DecodeString(pk.SHA256)
		if err != nil || len(sum) != 32 {
			return fmt.Errorf("pack %s: bad checksum in the index", pk.Pack)
		}
		for _, t := range targets {
			ok, err := replica.Verify(ctx, t, repository.PackName(pk.Pack), pk.Size, [32]byte(sum))
			if err != nil || !ok {
				return fmt.Errorf("pack %s in %s: verified %v: %v", pk.Pack, t.Name(), ok, err)
			}
			if _, err := t.Stat(ctx, repository.ManifestName(pk.Pack)); err != nil {
				return fmt.Errorf("manifest of pack %s in %s: %w", pk.Pack, t.Name(), err)
			}
		}
	}
	return nil
}

// say prints one line of the demo's progress.
func say(format string, args ...any) { fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...) }

// offlineRestore restores every customer from the last target alone, reading the catalog, the
// keys and the erasure records from it (as custos restore --from-target does), and checks the
// result like the broker's restore.
func offlineRestore(ctx context.Context, parts *config.Parts, shop *shop, out string) error {
	src := parts.Targets[len(parts.Targets)-1]
	opener := parts.Repository().Opener
	mem := repository.NewMemory(parts.KMS)
	if _, err := repository.Rebuild(ctx, src, nil, opener, mem, repository.RebuildOptions{}); err != nil {
		return fmt.Errorf("read the record of %s: %w", src.Name(), err)
	}
	r := &restore.Restorer{Index: mem, Targets: []target.Reader{src}, Keys: mem,
		Repo: repository.NewReader(opener, src), Pseudonyms: parts.KMS, Logger: logger()}
	rep, err := r.All(ctx, restore.Options{Out: out})
	if err != nil {
		return err
	}
	if !rep.OK() || len(rep.Erased) != 1 {
		return fmt.Errorf("restore from %s alone: %d failures, %d erased (want 0 and 1)", src.Name(), len(rep.Failures), len(rep.Erased))
	}
	verified, err := shop.verify(out)
	if err != nil {
		return fmt.Errorf("restore from %s alone: %w", src.Name(), err)
	}
	say("restored again from %s alone, with no broker: %d customers verified, the erased one still erased", src.Name(), verified)
	return nil
}
