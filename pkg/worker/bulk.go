package worker

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/hashicorp/go-retryablehttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/pack"
	"github.com/custos-dev/custos/pkg/replica"
	"github.com/custos-dev/custos/pkg/repository"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// errPermanent marks reference errors that no retry can fix.
var errPermanent = errors.New("permanent")

// backupRef streams one large record into its own pack through a spool file that holds only
// ciphertext, so memory does not grow with the record's size (docs/design.md section 6).
func (w *Worker) backupRef(h *heldMsg, meta *custosv1.Meta, idx int, r *custosv1.Record, hold bool) {
	ctx, cancel := context.WithTimeout(w.workCtx, commitTimeout)
	defer cancel()
	ctx, span := w.tracer.Start(trace.ContextWithSpan(ctx, h.span), "backup large item")
	defer span.End()
	class := meta.GetDataClass()
	pseudo := w.pseudonym(meta)
	id := w.itemID(meta, idx)
	dek, err := w.deps.Keys.DataKey(ctx, pseudo)
	if errors.Is(err, keys.ErrDestroyed) {
		w.deadLetter(h, "customer was erased; refusing to back up new data for it")
		return
	}
	if err != nil {
		h.retryLater(fmt.Errorf("data key: %w", err))
		return
	}
	src, size, err := w.openRef(ctx, r.GetRef())
	if err != nil {
		if errors.Is(err, errPermanent) {
			w.deadLetter(h, err.Error())
		} else {
			h.retryLater(err)
		}
		return
	}
	defer src.Close()
	if size > w.cfg.MaxRefBytes {
		w.deadLetter(h, fmt.Sprintf("record by reference is %d bytes, limit %d", size, w.cfg.MaxRefBytes))
		return
	}
	span.SetAttributes(attribute.Int64("custos.record.bytes", size))
	im := pack.ItemMeta{Tenant: meta.GetTenant(), CustomerID: meta.GetCustomerId(), RecordKey: r.GetKey(),
		EventID: meta.GetEventId(), EventTime: meta.GetTime().AsTime().UTC(), ContentType: r.GetContentType(), Size: size}
	spool, sum, n, err := w.spoolItem(ctx, dek, pseudo, class, id, im, src)
	if spool != "" {
		defer os.Remove(spool)
	}
	if err != nil {
		h.retryLater(err)
		return
	}
	w.count(func(s *Stats) { s.Items++ })
	pid := pack.PackID([]string{id})
	if err := w.intents.publish(ctx, intent{Pack: pid, Class: class, Seqs: []uint64{h.seq}, Bulk: true, Hold: hold}); err != nil {
		h.retryLater(err)
		return
	}
	m := pack.Manifest{V: 1, Pack: pid, Class: class, Size: n, SHA256: hex.EncodeToString(sum[:]), NewestEvent: im.EventTime,
		Items: []pack.Entry{{ID: id, Customer: pseudo, Seq: h.seq, EventTime: im.EventTime, Length: n, SHA256: hex.EncodeToString(sum[:])}}}
	_, err = w.writePack(ctx, class, hold, m, sum, fileSource(spool))
	if errors.Is(err, replica.ErrConflict) {
		// An earlier delivery stored this item with other random nonces before it died. Adopt
		// that copy (after authenticating it) so every target holds the same bytes.
		err = w.adopt(ctx, dek, pseudo, class, hold, m)
	}
	if err != nil {
		h.retryLater(err)
		return
	}
	w.finish(h, pid)
}

func fileSource(path string) replica.Source {
	return func() (io.ReadSeeker, error) { return os.Open(path) }
}

// spoolItem writes the encrypted item to a temporary file and returns its path, SHA-256 and size.
func (w *Worker) spoolItem(ctx context.Context, dek []byte, pseudo, class, id string, im pack.ItemMeta, src io.Reader) (string, [32]byte, int64, error) {
	_, span := w.tracer.Start(ctx, "encrypt")
	defer span.End()
	f, err := os.CreateTemp(w.cfg.SpoolDir, "custos-spool-*")
	if err != nil {
		return "", [32]byte{}, 0, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	hw := &hashCounter{h: sha256.New()}
	bw := bufio.NewWriterSize(io.MultiWriter(f, hw), 1<<20)
	if err := pack.StreamItem(bw, dek, pseudo, class, id, im, src); err != nil {
		return f.Name(), [32]byte{}, 0, err
	}
	if err := bw.Flush(); err != nil {
		return f.Name(), [32]byte{}, 0, fmt.Errorf("spool: %w", err)
	}
	return f.Name(), [32]byte(hw.h.Sum(nil)), hw.n, f.Close()
}

type hashCounter struct {
	h hash.Hash
	n int64
}

func (c *hashCounter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

// adopt finds the copy of a large item that a target already holds, authenticates it, and
// writes that copy everywhere.
func (w *Worker) adopt(ctx context.Context, dek []byte, pseudo, class string, hold bool, m pack.Manifest) error {
	name := repository.PackName(m.Pack)
	for _, t := range w.classTargets(class) {
		info, err := t.Stat(ctx, name)
		if err != nil {
			continue
		}
		rc, err := t.Get(ctx, name)
		if err != nil {
			continue
		}
		f, err := os.CreateTemp(w.cfg.SpoolDir, "custos-adopt-*")
		if err != nil {
			rc.Close()
			return err
		}
		hw := &hashCounter{h: sha256.New()}
		_, err = io.Copy(io.MultiWriter(f, hw), rc)
		rc.Close()
		f.Close()
		defer os.Remove(f.Name())
		if err != nil || hw.n != info.Size {
			continue
		}
		if err := authenticate(f.Name(), dek, pseudo, class, m.Items[0].ID); err != nil {
			w.log.Warn("existing copy failed authentication; not adopted", "target", t.Name(), "pack", m.Pack, "err", err)
			continue
		}
		sum := [32]byte(hw.h.Sum(nil))
		m.Size, m.SHA256 = hw.n, hex.EncodeToString(sum[:])
		m.Items[0].Length, m.Items[0].SHA256 = hw.n, m.SHA256
		if _, err := w.writePack(ctx, class, hold, m, sum, fileSource(f.Name())); err == nil {
			return nil
		}
	}
	return fmt.Errorf("pack %s: targets hold different copies and none could be adopted", m.Pack)
}

func authenticate(path string, dek []byte, pseudo, class, id string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	it, err := pack.OpenItemStream(bufio.NewReaderSize(f, 1<<20), dek, pseudo, class, id)
	if err != nil {
		return err
	}
	defer it.Close()
	_, err = io.Copy(io.Discard, it)
	return err
}

// openRef opens a record given by reference. Its errors, and those of the returned reader, name
// only the class of a failure, never the URI or a part of it (see errRefRead).
func (w *Worker) openRef(ctx context.Context, ref *custosv1.RecordRef) (io.ReadCloser, int64, error) {
	u, err := url.Parse(ref.GetUri())
	if err != nil {
		return nil, 0, fmt.Errorf("%w: record reference is not a URI", errPermanent)
	}
	// Schemes match in any letter case, as event validation accepts them.
	switch scheme := strings.ToLower(u.Scheme); scheme {
	case "nats-object":
		return openObject(ctx, w.deps.JS, u.Host, strings.TrimPrefix(u.Path, "/"))
	case "https", "http":
		client := retryablehttp.NewClient()
		client.Logger = nil
		client.RetryMax = 3
		req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: record reference is not a valid request URI", errPermanent)
		}
		resp, err := client.Do(req)
		if err != nil {
			// The client's error quotes the URL.
			return nil, 0, withContext(ctx, err, errRefFetch)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("%w: HTTP %d", errRefFetch, resp.StatusCode)
		}
		if resp.ContentLength < 0 {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("%w: record reference has no Content-Length", errPermanent)
		}
		return &refBody{ctx: ctx, rc: resp.Body}, resp.ContentLength, nil
	default:
		return nil, 0, fmt.Errorf("%w: record reference scheme is not supported", errPermanent)
	}
}

// refBody is the body of a record fetched over HTTP. Its read errors become errRefFetch, as the
// transport's may quote the URL.
type refBody struct {
	ctx context.Context
	rc  io.ReadCloser
}

func (b *refBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		err = withContext(b.ctx, err, errRefFetch)
	}
	return n, err
}

func (b *refBody) Close() error { return b.rc.Close() }
