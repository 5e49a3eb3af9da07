// Package s3 is a storage target on Amazon S3 or an S3-compatible service (see Profiles).
//
// Objects are stored under Config.Prefix + name. Put is create-only with If-None-Match: "*" on
// the request that creates the object, so concurrent Puts of one name cannot overwrite each
// other; the service verifies the SHA-256 of what it received (x-amz-checksum-sha256 and the
// signed payload hash) and the target verifies size and SHA-256 while streaming, before the
// object becomes visible. Objects up to Config.PartSize go in one PutObject; larger ones in a
// multipart upload with at most Config.Concurrency parts in memory, completed only after the
// whole-object checksum matched and aborted on any failure. A crash mid-upload leaves only an
// invisible multipart upload, removed by AbortIncomplete or a bucket lifecycle rule.
//
// Retention and legal hold go on the request that creates the object, so an object is never
// visible unlocked. Object Lock buckets are versioned: Delete removes the current version
// itself (not just hiding it behind a delete marker), which the service refuses while the
// version is locked (target.ErrLocked).
//
// The SDK makes a single attempt per call: retries belong to the retry wrapper, which retries
// the errors this package does not mark permanent.
package s3

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/custos-dev/custos/pkg/target"
)

var _ target.Target = (*Target)(nil)

// metaSHA256 is the user metadata key (x-amz-meta-sha256) holding the hex SHA-256 of the
// object, verified before the object became visible; Stat reports it.
const metaSHA256 = "sha256"

// Target stores objects in an S3 bucket. It is safe for concurrent use.
type Target struct {
	cfg       resolved
	client    *s3.Client
	transport *http.Transport
	now       func() time.Time
	closeOnce sync.Once
}

// New creates a target for cfg. It makes no request: a wrong bucket or credentials show on
// first use.
func New(ctx context.Context, cfg Config) (*Target, error) {
	rc, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
	}
	if rc.Region != "" {
		opts = append(opts, config.WithRegion(rc.Region))
	}
	if rc.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(rc.AccessKeyID, rc.SecretAccessKey, rc.SessionToken)))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		// The SDK's message names files and profiles, not secrets.
		return nil, fmt.Errorf("s3: load AWS configuration: %w", err)
	}
	// A transport of our own (with the CA bundle the shared config may have set), so Close
	// can release its connections.
	var tr *http.Transport
	if bc, ok := awsCfg.HTTPClient.(*awshttp.BuildableClient); ok {
		tr = bc.GetTransport()
	} else {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	tr.MaxIdleConnsPerHost = max(rc.Concurrency*2, 8)
	tr.ResponseHeaderTimeout = 5 * time.Minute // CompleteMultipartUpload may take minutes
	awsCfg.HTTPClient = &http.Client{Transport: tr}
	if awsCfg.Region == "" {
		if rc.Endpoint == "" {
			return nil, errors.New("s3: config: no region configured (Config.Region, AWS_REGION or shared config)")
		}
		awsCfg.Region = "us-east-1" // S3-compatible services accept any region in signatures
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if rc.Endpoint != "" {
			o.BaseEndpoint = aws.String(rc.Endpoint)
		}
		o.UsePathStyle = rc.UsePathStyle
		o.Retryer = aws.NopRetryer{}
		// Checksums are set explicitly where the profile supports them; the SDK must not add
		// CRC32 trailers, which need TLS or seekable bodies and which some services reject.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	rc.SecretAccessKey, rc.SessionToken = "", "" // held by the SDK's provider only
	return &Target{cfg: rc, client: client, transport: tr, now: time.Now}, nil
}

// Name implements target.Reader: "s3:<Config.Name>".
func (t *Target) Name() string { return "s3:" + t.cfg.Name }

// Kind implements target.Target.
func (t *Target) Kind() string { return "s3" }

// Close implements target.Target: it closes idle connections. It is safe to call twice.
func (t *Target) Close() error {
	t.closeOnce.Do(t.transport.CloseIdleConnections)
	return nil
}

// Profile returns the provider profile the target runs with.
func (t *Target) Profile() Profile { return t.cfg.profile }

func (t *Target) key(name string) string { return t.cfg.Prefix + name }

func (t *Target) check(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return target.ValidateName(name)
}

// Get implements target.Reader.
func (t *Target) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return t.GetRange(ctx, name, 0, -1)
}

// GetRange implements target.Reader.
func (t *Target) GetRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	rc, err := t.getRange(ctx, name, offset, length)
	if err != nil {
		return nil, fmt.Errorf("s3: get %s: %w", name, err)
	}
	return rc, nil
}

func (t *Target) getRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := t.check(ctx, name); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("offset %d: %w", offset, target.ErrInvalidRange)
	}
	if length == 0 { // S3 cannot express an empty range; the object must still exist
		return t.emptyAt(ctx, name, offset)
	}
	in := &s3.GetObjectInput{Bucket: &t.cfg.Bucket, Key: aws.String(t.key(name))}
	ranged := offset > 0 || length > 0
	switch {
	case length < 0 && offset > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	case length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	}
	out, err := t.client.GetObject(ctx, in)
	if err != nil {
		err = classify(ctx, err)
		if errors.Is(err, target.ErrInvalidRange) {
			// The range starts at or past the end: at the end is an empty read, past it an error.
			return t.emptyAt(ctx, name, offset)
		}
		return nil, err
	}
	if ranged && out.ContentRange == nil && offset > 0 {
		// The service ignored Range and sent the whole object (RFC 9110 allows it).
		if _, err := io.CopyN(io.Discard, out.Body, offset); err != nil {
			out.Body.Close()
			return nil, fmt.Errorf("skip to offset %d: %w", offset, err)
		}
	}
	if length > 0 {
		return struct {
			io.Reader
			io.Closer
		}{io.LimitReader(out.Body, length), out.Body}, nil
	}
	return out.Body, nil
}

// emptyAt returns an empty reader if offset is at most the object's size.
func (t *Target) emptyAt(ctx context.Context, name string, offset int64) (io.ReadCloser, error) {
	head, err := t.head(ctx, name)
	if err != nil {
		return nil, err
	}
	if size := aws.ToInt64(head.ContentLength); offset > size {
		return nil, fmt.Errorf("offset %d, size %d: %w", offset, size, target.ErrInvalidRange)
	}
	return io.NopCloser(bytes.NewReader(nil)), nil
}

func (t *Target) head(ctx context.Context, name string) (*s3.HeadObjectOutput, error) {
	return t.headKey(ctx, t.key(name))
}

func (t *Target) headKey(ctx context.Context, key string) (*s3.HeadObjectOutput, error) {
	out, err := t.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &t.cfg.Bucket, Key: &key})
	if err != nil {
		return nil, classify(ctx, err)
	}
	return out, nil
}

// Stat implements target.Reader. SHA256 is the checksum verified when the object was stored,
// kept in its metadata; zero for objects stored by other means.
func (t *Target) Stat(ctx context.Context, name string) (target.Info, error) {
	if err := t.check(ctx, name); err != nil {
		return target.Info{}, fmt.Errorf("s3: stat %s: %w", name, err)
	}
	head, err := t.head(ctx, name)
	if err != nil {
		return target.Info{}, fmt.Errorf("s3: stat %s: %w", name, err)
	}
	info := target.Info{Name: name, Size: aws.ToInt64(head.ContentLength), ModTime: aws.ToTime(head.LastModified)}
	for k, v := range head.Metadata {
		if strings.EqualFold(k, metaSHA256) {
			if b, err := hex.DecodeString(v); err == nil && len(b) == len(info.SHA256) {
				info.SHA256 = [32]byte(b)
			}
		}
	}
	return info, nil
}

// List implements target.Reader. S3 lists keys in UTF-8 byte order, which is lexical order for
// valid names. Keys under the prefix that are not valid names (written by other tools) are
// skipped. fn's error is returned as is.
func (t *Target) List(ctx context.Context, prefix string, fn func(target.Info) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3: list %s: %w", prefix, err)
	}
	if err := target.ValidatePrefix(prefix); err != nil {
		return fmt.Errorf("s3: list: %w", err)
	}
	pages := s3.NewListObjectsV2Paginator(t.client, &s3.ListObjectsV2Input{
		Bucket: &t.cfg.Bucket,
		Prefix: aws.String(t.key(prefix)),
	})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("s3: list %s: %w", prefix, classify(ctx, err))
		}
		for _, obj := range page.Contents {
			name, ok := strings.CutPrefix(aws.ToString(obj.Key), t.cfg.Prefix)
			if !ok || target.ValidateName(name) != nil {
				continue
			}
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("s3: list %s: %w", prefix, err)
			}
			if err := fn(target.Info{Name: name, Size: aws.ToInt64(obj.Size), ModTime: aws.ToTime(obj.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete implements target.Writer. It looks up the current version and deletes that version,
// so the object is gone for good rather than hidden behind a delete marker. The service
// refuses while the version is under retention or legal hold: that AccessDenied is
// target.ErrLocked. Older versions of the name, if another tool made any, are left alone.
func (t *Target) Delete(ctx context.Context, name string) error {
	if err := t.delete(ctx, name); err != nil {
		return fmt.Errorf("s3: delete %s: %w", name, err)
	}
	return nil
}

func (t *Target) delete(ctx context.Context, name string) error {
	if err := t.check(ctx, name); err != nil {
		return err
	}
	head, err := t.head(ctx, name)
	if err != nil {
		return err
	}
	in := &s3.DeleteObjectInput{Bucket: &t.cfg.Bucket, Key: aws.String(t.key(name)), VersionId: head.VersionId}
	if _, err := t.client.DeleteObject(ctx, in); err != nil {
		if isCode(err, "AccessDenied") {
			if t.locked(head) {
				return fmt.Errorf("%w (%w)", target.ErrLocked, err)
			}
			// Without permission to read the lock state (s3:GetObjectRetention) the cause is
			// ambiguous; in an Object Lock bucket the lock is by far the likelier one.
			return fmt.Errorf("%w: access denied: version locked, or no s3:DeleteObjectVersion permission (%w)", target.ErrLocked, err)
		}
		return classify(ctx, err)
	}
	return nil
}

// locked reports whether head shows an active legal hold or retention.
func (t *Target) locked(head *s3.HeadObjectOutput) bool {
	return head.ObjectLockLegalHoldStatus == types.ObjectLockLegalHoldStatusOn ||
		(head.ObjectLockRetainUntilDate != nil && t.now().Before(*head.ObjectLockRetainUntilDate))
}

// AbortIncomplete aborts the multipart uploads under the target's prefix that were started
// more than olderThan ago: the invisible leftovers of Puts that crashed. Pick olderThan well
// above the longest Put (a day is safe). It returns how many uploads it aborted. A bucket
// lifecycle rule (AbortIncompleteMultipartUpload) does the same on the service side.
func (t *Target) AbortIncomplete(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := t.now().Add(-olderThan)
	pages := s3.NewListMultipartUploadsPaginator(t.client, &s3.ListMultipartUploadsInput{
		Bucket: &t.cfg.Bucket,
		Prefix: aws.String(t.cfg.Prefix),
	})
	n := 0
	var errs []error
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return n, fmt.Errorf("s3: abort incomplete uploads: %w", classify(ctx, err))
		}
		for _, u := range page.Uploads {
			if u.Initiated == nil || !u.Initiated.Before(cutoff) {
				continue
			}
			_, err := t.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
				Bucket: &t.cfg.Bucket, Key: u.Key, UploadId: u.UploadId,
			})
			if err != nil && !isCode(err, "NoSuchUpload") {
				errs = append(errs, fmt.Errorf("%s: %w", aws.ToString(u.Key), classify(ctx, err)))
				continue
			}
			n++
		}
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("s3: abort incomplete uploads: %w", err)
	}
	return n, nil
}
