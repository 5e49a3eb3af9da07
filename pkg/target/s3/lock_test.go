package s3_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/s3"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

// TestObjectLock checks that retention set by Put is enforced by the service in both modes,
// for single and multipart objects: no delete and no overwrite before it ends, and a delete
// afterwards that leaves no version behind.
func TestObjectLock(t *testing.T) {
	srv := startServer(t)
	for _, c := range []struct{ name, provider, mode string }{
		{s3.LockGovernance, "versitygw", s3.LockGovernance},
		{s3.LockCompliance, "versitygw", s3.LockCompliance},
		// Content-MD5 instead of SHA-256 checksums, as for providers without them.
		{"generic-" + s3.LockCompliance, "generic", s3.LockCompliance},
	} {
		mode := c.mode
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			bucket := srv.newBucket(t)
			cfg := srv.config(bucket)
			cfg.Provider, cfg.UsePathStyle = c.provider, true
			cfg.LockMode, cfg.PartSize = mode, s3.MinPartSize
			tg := open(t, cfg)
			ctx := t.Context()
			objects := map[string][]byte{
				"packs/single":    targettest.Data(1, 1000),
				"packs/multipart": targettest.Data(2, s3.MinPartSize+1),
			}
			until := time.Now().Add(3 * time.Second).Truncate(time.Second)
			for name, data := range objects {
				opts := target.PutOptions{SHA256: sha256.Sum256(data), RetainUntil: until}
				if err := tg.Put(ctx, name, bytes.NewReader(data), int64(len(data)), opts); err != nil {
					t.Fatalf("Put(%s): %v", name, err)
				}
				head, err := srv.admin.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &bucket, Key: aws.String(name)})
				if err != nil {
					t.Fatal(err)
				}
				if string(head.ObjectLockMode) != mode || !aws.ToTime(head.ObjectLockRetainUntilDate).Equal(until) {
					t.Errorf("%s: service reports lock %q until %v, want %s until %v", name, head.ObjectLockMode, aws.ToTime(head.ObjectLockRetainUntilDate), mode, until)
				}
				if err := tg.Delete(ctx, name); !errors.Is(err, target.ErrLocked) {
					t.Errorf("Delete(%s) under retention = %v, want ErrLocked", name, err)
				}
				other := targettest.Data(9, len(data))
				err = tg.Put(ctx, name, bytes.NewReader(other), int64(len(other)), target.PutOptions{SHA256: sha256.Sum256(other)})
				if !errors.Is(err, target.ErrExists) {
					t.Errorf("overwrite of %s under retention = %v, want ErrExists", name, err)
				}
				targettest.AssertContent(t, tg, name, data)
			}
			time.Sleep(time.Until(until) + time.Second)
			for name, data := range objects {
				if err := tg.Delete(ctx, name); err != nil {
					t.Fatalf("Delete(%s) after retention: %v", name, err)
				}
				targettest.AssertMissing(t, tg, name)
				assertNoVersions(t, srv, bucket, name)
				targettest.Put(t, tg, name, data) // the name is free again
			}
		})
	}
	t.Run("LegalHold", func(t *testing.T) {
		t.Parallel()
		bucket := srv.newBucket(t)
		tg := open(t, srv.config(bucket))
		ctx := t.Context()
		data := []byte("held")
		opts := target.PutOptions{SHA256: sha256.Sum256(data), LegalHold: true}
		if err := tg.Put(ctx, "h", bytes.NewReader(data), int64(len(data)), opts); err != nil {
			t.Fatal(err)
		}
		if err := tg.Delete(ctx, "h"); !errors.Is(err, target.ErrLocked) {
			t.Fatalf("Delete under legal hold = %v, want ErrLocked", err)
		}
		// Releasing a hold is an operator's decision, outside the target.
		_, err := srv.admin.PutObjectLegalHold(ctx, &awss3.PutObjectLegalHoldInput{
			Bucket: &bucket, Key: aws.String("h"),
			LegalHold: &types.ObjectLockLegalHold{Status: types.ObjectLockLegalHoldStatusOff},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := tg.Delete(ctx, "h"); err != nil {
			t.Fatalf("Delete after the hold was released: %v", err)
		}
		assertNoVersions(t, srv, bucket, "h")
	})
}

// assertNoVersions checks that key has neither versions nor delete markers left: Delete
// removed the object, it did not hide it.
func assertNoVersions(t *testing.T, srv *server, bucket, key string) {
	t.Helper()
	out, err := srv.admin.ListObjectVersions(t.Context(), &awss3.ListObjectVersionsInput{Bucket: &bucket, Prefix: &key})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range out.Versions {
		if aws.ToString(v.Key) == key {
			t.Errorf("%s: version %s left after Delete", key, aws.ToString(v.VersionId))
		}
	}
	for _, m := range out.DeleteMarkers {
		if aws.ToString(m.Key) == key {
			t.Errorf("%s: delete marker %s left after Delete", key, aws.ToString(m.VersionId))
		}
	}
}
