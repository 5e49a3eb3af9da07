// Package azure is a storage target on Azure Blob Storage: block blobs in one container, under
// an optional name prefix, through the Azure SDK for Go (azblob).
//
// Put is create-only and atomic. An object up to Config.BlockSize is verified in memory and
// stored with one Put Blob request; a larger one is staged as uncommitted blocks, at most
// Config.Concurrency at once, while its size and SHA-256 are checked, and made visible by one
// Put Block List request only after both matched. Every request that carries data sends the
// MD5 of that data, which the service verifies. The Put Blob and Put Block List requests carry
// If-None-Match: *, so an existing object is never replaced (target.ErrExists). The hex
// SHA-256 is stored in the blob's metadata ("sha256"), so Stat and List report it.
//
// Uncommitted blocks are invisible to Get, Stat and List; a Put that fails or crashes leaves
// only such blocks, which the service discards a week later (or when the name is next
// committed). Block ids are derived from the block's index and MD5, so concurrent Puts of one
// name never commit each other's bytes.
//
// Retention and legal hold (PutOptions.RetainUntil, LegalHold) are set by the very request that
// makes the object visible, so it is never visible unprotected. They need a container with
// version-level immutability; on any other container (and on Azurite, which has none) such a
// Put fails with an error matching target.ErrPermanent and stores nothing. Retention is a
// Locked policy unless Config.UnlockedRetention is set. Delete refuses an object whose
// properties show an active policy or hold with target.ErrLocked.
//
// The SDK's retries are off, errors are classified (see classify), and the target holds no
// retry loop, limits or metrics: those are wrappers (pkg/target/stack).
package azure

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/custos-dev/custos/pkg/target"
)

var _ target.Target = (*Target)(nil)

// metaSHA256 is the metadata key holding the hex SHA-256 of an object.
const metaSHA256 = "sha256"

// Target stores objects as block blobs in one container. It is safe for concurrent use.
type Target struct {
	cfg       Config
	name      string
	cc        *container.Client
	closeIdle func() // closes the idle connections of the target's own transport
	// immutable says whether the container supports version-level immutability; immKnown is
	// false until the container's properties could be read (New tolerates an outage).
	immMu     sync.Mutex
	immutable bool
	immKnown  bool
	now       func() time.Time
	pageSize  int32 // List page size; tests lower it to exercise paging
}

// Name implements target.Reader.
func (t *Target) Name() string { return t.name }

// Kind implements target.Target.
func (t *Target) Kind() string { return "azure" }

// Close implements target.Target: it closes idle connections. It is safe to call twice; the
// target stays usable and opens new connections if it is used again.
func (t *Target) Close() error {
	t.closeIdle()
	return nil
}

func (t *Target) blob(name string) *blockblob.Client {
	return t.cc.NewBlockBlobClient(t.cfg.Prefix + name)
}

// Get implements target.Reader.
func (t *Target) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return t.GetRange(ctx, name, 0, -1)
}

// GetRange implements target.Reader. The body is not verified here: callers check the
// SHA-256 the manifest records.
func (t *Target) GetRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	rc, err := t.getRange(ctx, name, offset, length)
	if err != nil {
		return nil, fmt.Errorf("azure: get %s: %w", name, err)
	}
	return rc, nil
}

func (t *Target) getRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := check(ctx, name); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("offset %d: %w", offset, target.ErrInvalidRange)
	}
	if length == 0 {
		return t.emptyAt(ctx, name, offset)
	}
	if length > math.MaxInt64-offset { // past any end: read to the end
		length = -1
	}
	resp, err := t.blob(name).DownloadStream(ctx, &blob.DownloadStreamOptions{
		Range: blob.HTTPRange{Offset: offset, Count: max(length, 0)},
	})
	if err != nil {
		err = classify(ctx, err)
		if errors.Is(err, target.ErrInvalidRange) {
			// The service refuses a range starting at the end of the object; the contract
			// reads zero bytes there.
			return t.emptyAt(ctx, name, offset)
		}
		return nil, err
	}
	return resp.Body, nil
}

// emptyAt returns an empty body if name exists and offset is within [0, size].
func (t *Target) emptyAt(ctx context.Context, name string, offset int64) (io.ReadCloser, error) {
	props, err := t.blob(name).GetProperties(ctx, nil)
	if err != nil {
		return nil, classify(ctx, err)
	}
	if size := deref(props.ContentLength); offset > size {
		return nil, fmt.Errorf("offset %d, size %d: %w", offset, size, target.ErrInvalidRange)
	}
	return http.NoBody, nil
}

// Stat implements target.Reader. SHA256 is the one Put stored in the metadata, zero for
// blobs written by others.
func (t *Target) Stat(ctx context.Context, name string) (target.Info, error) {
	if err := check(ctx, name); err != nil {
		return target.Info{}, fmt.Errorf("azure: stat %s: %w", name, err)
	}
	props, err := t.blob(name).GetProperties(ctx, nil)
	if err != nil {
		return target.Info{}, fmt.Errorf("azure: stat %s: %w", name, classify(ctx, err))
	}
	return target.Info{
		Name:    name,
		Size:    deref(props.ContentLength),
		SHA256:  sumFromMetadata(props.Metadata),
		ModTime: deref(props.LastModified),
	}, nil
}

// List implements target.Reader: the service lists blob names in lexical order, page by page.
// Blobs under the prefix whose names are not valid object names (not written by Custos) are
// skipped. fn's error is returned as is.
func (t *Target) List(ctx context.Context, prefix string, fn func(target.Info) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("azure: list %s: %w", prefix, err)
	}
	if err := target.ValidatePrefix(prefix); err != nil {
		return fmt.Errorf("azure: list: %w", err)
	}
	pager := t.cc.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Prefix:     to.Ptr(t.cfg.Prefix + prefix),
		MaxResults: to.Ptr(t.pageSize),
		Include:    container.ListBlobsInclude{Metadata: true},
	})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("azure: list %s: %w", prefix, classify(ctx, err))
		}
		for _, item := range page.Segment.BlobItems {
			name, ok := strings.CutPrefix(deref(item.Name), t.cfg.Prefix)
			if !ok || target.ValidateName(name) != nil || item.Properties == nil {
				continue
			}
			info := target.Info{
				Name:    name,
				Size:    deref(item.Properties.ContentLength),
				SHA256:  sumFromMetadata(item.Metadata),
				ModTime: deref(item.Properties.LastModified),
			}
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete implements target.Writer. It reads the object's properties first: a missing object
// is target.ErrNotFound (the service would silently drop uncommitted blocks under the name
// instead), and an object under an active retention policy or legal hold is target.ErrLocked
// (with version-level immutability the service would turn it into a previous version and
// remove the name). The delete itself is conditional on the ETag just read.
func (t *Target) Delete(ctx context.Context, name string) error {
	if err := t.delete(ctx, name); err != nil {
		return fmt.Errorf("azure: delete %s: %w", name, err)
	}
	return nil
}

func (t *Target) delete(ctx context.Context, name string) error {
	if err := check(ctx, name); err != nil {
		return err
	}
	bc := t.blob(name)
	props, err := bc.GetProperties(ctx, nil)
	if err != nil {
		return classify(ctx, err)
	}
	if deref(props.LegalHold) {
		return fmt.Errorf("legal hold: %w", target.ErrLocked)
	}
	if until := deref(props.ImmutabilityPolicyExpiresOn); t.now().Before(until) {
		return fmt.Errorf("retained until %s: %w", until.Format(time.RFC3339), target.ErrLocked)
	}
	_, err = bc.Delete(ctx, &blob.DeleteOptions{AccessConditions: &blob.AccessConditions{
		ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: props.ETag},
	}})
	if bloberror.HasCode(err, bloberror.ConditionNotMet) && ctx.Err() == nil {
		// Deleted and created again since the properties were read: transient, a retry
		// deletes the new object (or finds it locked).
		return errors.New("object changed while being deleted: service answered 412 ConditionNotMet")
	}
	return classify(ctx, err)
}

func check(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return target.ValidateName(name)
}

// sumFromMetadata returns the SHA-256 stored by Put, or zero. The service may change the
// case of metadata keys.
func sumFromMetadata(md map[string]*string) [32]byte {
	for k, v := range md {
		if !strings.EqualFold(k, metaSHA256) || v == nil {
			continue
		}
		var sum [32]byte
		if b, err := hex.DecodeString(*v); err == nil && len(b) == len(sum) {
			copy(sum[:], b)
			return sum
		}
	}
	return [32]byte{}
}

// etagAny is the If-None-Match value that makes a write create-only.
var etagAny = to.Ptr(azcore.ETagAny)

// deref returns *p, or the zero value for a nil p (the SDK's optional fields).
func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
