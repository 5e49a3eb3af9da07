package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/worker"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// Import batching: records of one customer travel together in one ManualRequest, up to these
// bounds, well under the 1 MiB event limit (docs/events.md) once framing and headers are added.
const (
	importEventBytes   = 768 << 10
	importEventRecords = 512
)

type backupImportOpts struct {
	class, tenant       string
	reason, requestedBy string
	contentType         string
	timeout             time.Duration
	noWait              bool
	progressEvery       time.Duration
}

func backupImportCmd() *cobra.Command {
	o := backupImportOpts{reason: "one-off import of existing records"}
	cmd := &cobra.Command{
		Use:   "import <dir|file.ndjson> --class C --tenant T --requested-by WHO",
		Short: "Back up existing records in one go, from a directory or an NDJSON file",
		Long: `Import backs up existing records of one tenant and data class through the workers' ordinary
path (packs, manifests, index): it publishes them as ManualRequest events, one per customer and
batch, and waits until every one is durable in the class's targets, printing progress (records,
bytes, rate, ETA) to standard error.

The input is read and checked whole before anything is sent: a malformed line or file stops the
command with its line number (or path) and nothing is published. Inputs (docs/sources.md,
"One-off import"):

  file.ndjson  one JSON object a line: {"customer":"c-1","key":"orders/7","data":{...}}
               "data" is the record: a JSON string is stored as its text, any other JSON value
               as its bytes exactly as written in the line; "data_base64" (standard base64)
               gives binary records instead; "content_type" is optional. Empty lines are skipped.
  dir/         <dir>/<customer>/<key>: every regular file is one record, its bytes as they are.
               Path elements are unescaped like custos restore escapes them (%2F is "/"), so
               the tenant directory of a restore (<out>/<tenant>) imports back as it was;
               deeper directories join the key with "/".

Event ids are derived from the records, so running the same import again is de-duplicated by
the broker, and where not, stores the same items under the same ids (restore keeps one).`,
		Example: `  custos backup import ./export.ndjson --config custos.yaml --class critical --tenant shop \
    --requested-by alice@ops
  custos backup import ./restored/shop --config custos.yaml --class critical --tenant shop \
    --requested-by alice@ops --reason "migrate from the old backup system CHG-2001"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			// Everything is read and checked before anything is connected or sent.
			in, err := readImport(args[0], o)
			if err != nil {
				return err
			}
			cfgPath, _ := cmd.Flags().GetString("config")
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if _, ok := cfg.Classes[o.class]; !ok {
				return fmt.Errorf("--class %s: the configuration defines no such class", o.class)
			}
			nc, js, err := connectNATS(cfg, "custos-backup-import")
			if err != nil {
				return err
			}
			defer nc.Drain()
			ctx := cmd.Context()
			if o.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, o.timeout)
				defer cancel()
			}
			res, err := runImport(ctx, nc, js, cfg, o, in, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported %d records (%d bytes) of %d customers in %d events\n",
				res.records, res.bytes, in.customers, len(in.events))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.class, "class", "", "data class of the records (required)")
	f.StringVar(&o.tenant, "tenant", "", "tenant the records belong to (required)")
	f.StringVar(&o.reason, "reason", o.reason, "why; kept in the audit log, no customer data")
	f.StringVar(&o.requestedBy, "requested-by", "", "who asks (your identity); kept in the audit log (required)")
	f.StringVar(&o.contentType, "content-type", "", "content type of records that give none (default application/json for NDJSON data that is not a string)")
	f.DurationVar(&o.timeout, "timeout", 0, "give up waiting after this long (0: wait until durable)")
	f.BoolVar(&o.noWait, "no-wait", false, "return once the broker has every event, without waiting until durable")
	f.DurationVar(&o.progressEvery, "progress-every", time.Second, "how often to print progress")
	return cmd
}

func (o *backupImportOpts) check() error {
	var errs []error
	if o.class == "" {
		errs = append(errs, errors.New("--class is required"))
	}
	if o.tenant == "" {
		errs = append(errs, errors.New("--tenant is required"))
	}
	if strings.TrimSpace(o.requestedBy) == "" {
		errs = append(errs, errors.New("--requested-by is required: say who imports (it is kept in the audit log)"))
	}
	if strings.TrimSpace(o.reason) == "" {
		errs = append(errs, errors.New("--reason must not be empty"))
	}
	return errors.Join(errs...)
}

// importLine is one NDJSON line.
type importLine struct {
	Customer    string          `json:"customer"`
	Key         string          `json:"key"`
	Data        json.RawMessage `json:"data"`
	DataBase64  *string         `json:"data_base64"`
	ContentType string          `json:"content_type"`
}

// importInput is the whole input, checked and cut into events.
type importInput struct {
	events    []*custosv1.ManualRequest
	records   int
	bytes     int64
	customers int
}

// readImport reads a directory or an NDJSON file into events; any malformed part is an error
// naming where it is, and then nothing is returned.
func readImport(path string, o backupImportOpts) (*importInput, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	b := &importBuilder{o: o, limits: event.Limits{}, seen: map[string]bool{}}
	if fi.IsDir() {
		err = b.readDir(path)
	} else {
		err = b.readNDJSON(path)
	}
	if err != nil {
		return nil, err
	}
	b.cut()
	if b.in.records == 0 {
		return nil, fmt.Errorf("%s holds no records", path)
	}
	return &b.in, nil
}

type importBuilder struct {
	o      backupImportOpts
	limits event.Limits
	in     importInput
	seen   map[string]bool
	// cur gathers consecutive records of one customer.
	cur      []*custosv1.Record
	curCust  string
	curBytes int
}

// add checks one record as a worker would and appends it to the current event.
func (b *importBuilder) add(where, customer, key, contentType string, data []byte) error {
	if customer == "" {
		return fmt.Errorf("%s: no customer", where)
	}
	rec := &custosv1.Record{Key: key, ContentType: contentType, Source: &custosv1.Record_Inline{Inline: data}}
	// Validate a one-record event: the same checks the producer and the worker apply.
	probe := &custosv1.ManualRequest{Meta: &custosv1.Meta{EventId: "probe", Time: timestamppb.Now(), Tenant: b.o.tenant,
		CustomerId: customer, DataClass: b.o.class}, Reason: b.o.reason, RequestedBy: b.o.requestedBy,
		Records: []*custosv1.Record{rec}}
	ev, err := event.New(probe, cliSource)
	if err == nil {
		err = b.limits.Validate(ev)
	}
	if err != nil {
		// The validation error never quotes the customer id or the data.
		return fmt.Errorf("%s: %v", where, err)
	}
	if customer != b.curCust || len(b.cur) >= importEventRecords || b.curBytes+len(data)+len(key) > importEventBytes {
		b.cut()
		b.curCust = customer
	}
	b.cur = append(b.cur, rec)
	b.curBytes += len(data) + len(key) + len(contentType)
	b.in.records++
	b.in.bytes += int64(len(data))
	if !b.seen[customer] {
		b.seen[customer] = true
		b.in.customers++
	}
	return nil
}

// cut closes the current event. Its id is derived from its content, so the same import run
// twice publishes the same events (de-duplicated by the broker's Nats-Msg-Id window).
func (b *importBuilder) cut() {
	if len(b.cur) == 0 {
		return
	}
	h := sha256.New()
	field := func(s string) { fmt.Fprintf(h, "%d:%s", len(s), s) }
	field("custos-import-v1")
	field(b.o.tenant)
	field(b.o.class)
	field(b.curCust)
	for _, r := range b.cur {
		field(r.GetKey())
		field(r.GetContentType())
		field(string(r.GetInline()))
	}
	id := "import-" + hex.EncodeToString(h.Sum(nil)[:16])
	b.in.events = append(b.in.events, &custosv1.ManualRequest{
		Meta:   &custosv1.Meta{EventId: id, Tenant: b.o.tenant, CustomerId: b.curCust, DataClass: b.o.class},
		Reason: b.o.reason, RequestedBy: b.o.requestedBy, Records: b.cur,
	})
	b.cur, b.curBytes = nil, 0
}

func (b *importBuilder) readNDJSON(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if len(line) == 0 && err == io.EOF {
			return nil
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("%s: line %d: %w", path, n, err)
		}
		if len(bytes.TrimSpace(line)) > 0 {
			if perr := b.ndjsonLine(fmt.Sprintf("%s: line %d", path, n), line); perr != nil {
				return perr
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

func (b *importBuilder) ndjsonLine(where string, line []byte) error {
	var l importLine
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		// The decoder's message names a position or a field, never the line's content.
		return fmt.Errorf("%s: not a JSON object of customer, key, data: %v", where, describeJSONError(err))
	}
	if dec.More() {
		return fmt.Errorf("%s: more than one JSON value", where)
	}
	if l.Key == "" {
		return fmt.Errorf("%s: no key", where)
	}
	ct := l.ContentType
	var data []byte
	switch {
	case l.DataBase64 != nil && l.Data != nil:
		return fmt.Errorf("%s: give data or data_base64, not both", where)
	case l.DataBase64 != nil:
		var err error
		if data, err = base64.StdEncoding.DecodeString(*l.DataBase64); err != nil {
			return fmt.Errorf("%s: data_base64 is not standard base64", where)
		}
	case l.Data == nil || bytes.Equal(l.Data, []byte("null")):
		return fmt.Errorf("%s: no data", where)
	case l.Data[0] == '"':
		var s string
		if err := json.Unmarshal(l.Data, &s); err != nil {
			return fmt.Errorf("%s: data: %v", where, describeJSONError(err))
		}
		data = []byte(s)
	default:
		data = []byte(l.Data)
		if ct == "" {
			ct = "application/json"
		}
	}
	if ct == "" {
		ct = b.o.contentType
	}
	return b.add(where, l.Customer, l.Key, ct, data)
}

// describeJSONError keeps the kind of a JSON error without any quoted input.
func describeJSONError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %s has the wrong type", te.Field)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return err.Error() // names the field, which is ours
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	}
	return "invalid JSON"
}

func (b *importBuilder) readDir(root string) error {
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			return nil // a restore's temporary files, editor droppings
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		files = append(files, p)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(files) // customer directories in order, so each customer's records travel together
	for _, p := range files {
		rel, _ := filepath.Rel(root, p)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if len(parts) < 2 {
			return fmt.Errorf("%s: a file directly in %s; records are <customer>/<key>", p, root)
		}
		elems := make([]string, len(parts))
		for i, e := range parts {
			u, err := unescapeElem(e)
			if err != nil {
				return fmt.Errorf("%s: path element %d is not a valid escaped name", p, i+1)
			}
			elems[i] = u
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := b.add(p, elems[0], strings.Join(elems[1:], "/"), b.o.contentType, data); err != nil {
			return err
		}
	}
	return nil
}

// unescapeElem inverts restore's path element escaping (docs/design.md section 7, Output
// layout): url.PathEscape, and "%" ‖ hex ‖ "_" for names that would be empty, "." or "..".
func unescapeElem(e string) (string, error) {
	if strings.HasPrefix(e, "%") && strings.HasSuffix(e, "_") && len(e) >= 2 {
		if b, err := hex.DecodeString(e[1 : len(e)-1]); err == nil {
			return string(b), nil
		}
	}
	return url.PathUnescape(e)
}

type importResult struct {
	records, bytes int64
}

// runImport publishes the events and, unless --no-wait, waits until each is durable: a pack
// holding it is indexed (its intent's done mark, docs/design.md section 5), the moment the
// worker acknowledges it. A dead-lettered event fails the import.
func runImport(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg *config.Config, o backupImportOpts, in *importInput, out io.Writer) (importResult, error) {
	w := newDurableWatch()
	if !o.noWait {
		// Subscribed before publishing: a pack may be done before its events' publish acks return.
		s1, err := nc.Subscribe(worker.IntentSubjectPrefix+">", w.intent)
		if err != nil {
			return importResult{}, err
		}
		defer s1.Unsubscribe()
		s2, err := nc.Subscribe(event.DLQSubjectPrefix+">", w.deadLetter)
		if err != nil {
			return importResult{}, err
		}
		defer s2.Unsubscribe()
		if err := nc.Flush(); err != nil {
			return importResult{}, err
		}
	}
	classes := make([]string, 0, len(cfg.Classes))
	for c := range cfg.Classes {
		classes = append(classes, c)
	}
	p, err := producer.New(js, cliSource, producer.WithLimits(event.Limits{Classes: classes}))
	if err != nil {
		return importResult{}, err
	}
	prog := &importProgress{out: out, every: o.progressEvery, start: time.Now(), totalRecords: int64(in.records), totalBytes: in.bytes}
	futures := make([]*producer.Future, len(in.events))
	for i, ev := range in.events {
		if futures[i], err = p.PublishAsync(ctx, ev); err != nil {
			return importResult{}, fmt.Errorf("publish event %d of %d: %w (events before it were sent; run the import again: it is idempotent)", i+1, len(in.events), err)
		}
	}
	bySeq := make(map[uint64]int, len(in.events))
	for i, f := range futures {
		ack, err := f.Wait(ctx)
		if err != nil {
			return importResult{}, fmt.Errorf("publish event %d of %d: %w (run the import again: it is idempotent)", i+1, len(in.events), err)
		}
		bySeq[ack.Sequence] = i
	}
	total := importResult{records: int64(in.records), bytes: in.bytes}
	if o.noWait {
		fmt.Fprintf(out, "published %d events; the workers back them up in the background\n", len(in.events))
		return total, nil
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	done := map[uint64]bool{}
	var res importResult
	for {
		for _, seq := range w.durable(bySeq, done) {
			ev := in.events[bySeq[seq]]
			res.records += int64(len(ev.Records))
			for _, r := range ev.Records {
				res.bytes += int64(len(r.GetInline()))
			}
		}
		if seq, why, ok := w.failed(bySeq); ok {
			return res, fmt.Errorf("event %s was dead-lettered (%s): %d of %d records are durable; see custos dlq",
				in.events[bySeq[seq]].Meta.GetEventId(), why, res.records, in.records)
		}
		prog.report(res.records, res.bytes, len(done) == len(bySeq))
		if len(done) == len(bySeq) {
			return res, nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return res, fmt.Errorf("waiting for the import to be durable: %w (%d of %d records durable)", ctx.Err(), res.records, in.records)
		}
	}
}

// durableWatch follows pack intents and dead letters.
type durableWatch struct {
	mu    sync.Mutex
	seqs  map[string][]uint64 // pack id -> stream sequences of its events
	ready map[uint64]bool     // sequences in an indexed pack
	dead  map[uint64]string   // sequence -> reason, for dead-lettered events
}

func newDurableWatch() *durableWatch {
	return &durableWatch{seqs: map[string][]uint64{}, ready: map[uint64]bool{}, dead: map[uint64]string{}}
}

func (w *durableWatch) intent(m *nats.Msg) {
	w.mu.Lock()
	defer w.mu.Unlock()
	rest := strings.TrimPrefix(m.Subject, worker.IntentSubjectPrefix)
	if id, ok := strings.CutSuffix(rest, ".done"); ok {
		for _, s := range w.seqs[id] {
			w.ready[s] = true
		}
		w.seqs[id] = nil
		return
	}
	var in struct {
		Pack string   `json:"pack"`
		Seqs []uint64 `json:"seqs"`
	}
	if json.Unmarshal(m.Data, &in) == nil && in.Pack != "" {
		w.seqs[in.Pack] = in.Seqs
	}
}

func (w *durableWatch) deadLetter(m *nats.Msg) {
	var seq uint64
	if _, err := fmt.Sscan(m.Header.Get(worker.HeaderDLQSeq), &seq); err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dead[seq] = m.Header.Get(worker.HeaderDLQReason)
}

// durable returns the sequences of ours that became durable since the last call, marking them.
func (w *durableWatch) durable(ours map[uint64]int, done map[uint64]bool) []uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []uint64
	for s := range w.ready {
		if _, ok := ours[s]; ok && !done[s] {
			done[s] = true
			out = append(out, s)
		}
	}
	return out
}

func (w *durableWatch) failed(ours map[uint64]int) (uint64, string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for s, why := range w.dead {
		if _, ok := ours[s]; ok && !w.ready[s] {
			return s, why, true
		}
	}
	return 0, "", false
}

// importProgress prints records, bytes, rate and ETA at most every `every`, and once at the end.
type importProgress struct {
	out                      io.Writer
	every                    time.Duration
	start, last              time.Time
	totalRecords, totalBytes int64
}

func (p *importProgress) report(records, bytes int64, final bool) {
	now := time.Now()
	if !final && now.Sub(p.last) < p.every {
		return
	}
	p.last = now
	fmt.Fprintln(p.out, progressLine(records, p.totalRecords, bytes, p.totalBytes, now.Sub(p.start)))
}

// progressLine formats one progress report; ETA is left out until something is done.
func progressLine(records, totalRecords, bytes, totalBytes int64, elapsed time.Duration) string {
	secs := max(elapsed.Seconds(), 1e-3)
	rate := float64(records) / secs
	line := fmt.Sprintf("progress: %d/%d records, %.1f/%.1f MB durable, %.0f records/s, %.1f MB/s",
		records, totalRecords, float64(bytes)/1e6, float64(totalBytes)/1e6, rate, float64(bytes)/1e6/secs)
	switch {
	case records >= totalRecords:
		line += fmt.Sprintf(", done in %s", elapsed.Round(100*time.Millisecond))
	case records > 0:
		eta := time.Duration(float64(totalRecords-records) / rate * float64(time.Second))
		line += fmt.Sprintf(", ETA %s", eta.Round(time.Second))
	}
	return line
}
