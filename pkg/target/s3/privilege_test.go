package s3_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/custos-dev/custos/pkg/devstack"
	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/s3"
	"github.com/custos-dev/custos/pkg/target/targettest"
)

// TestWorkerCannotUnlock checks least privilege against the emulator's own IAM. The worker is
// a non-root user ("user" role) that the bucket's policy allows devstack.S3WorkerPolicy and
// nothing else; root created the bucket with Object Lock and a default retention. The worker's
// target stores locked objects, and then the worker's credential can neither delete them, nor
// shorten or bypass their retention, nor weaken the bucket's lock configuration, replace its
// policy or delete it: each attempt is refused with 403 AccessDenied, and root afterwards reads
// every locked version back byte for byte with its lock unchanged. A raw overwrite or a delete
// without a version, which S3 allows in a versioned bucket, only adds a version or a delete
// marker in front of the locked version, which stays.
//
// Positive controls show the credential is enough for the target's work (Put with retention
// and legal hold, multipart, Get, Stat, List, AbortIncomplete, Delete once retention ended),
// so the refusals come from the locks and the withheld permissions.
func TestWorkerCannotUnlock(t *testing.T) {
	srv := startServer(t)
	worker := devstack.S3User{AccessKey: "worker", SecretKey: "worker-secret-do-not-log", Role: "user"}
	srv.createUser(t, worker)

	for _, mode := range []string{s3.LockCompliance, s3.LockGovernance} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			lockMode := types.ObjectLockRetentionMode(mode)
			bucket := srv.newBucket(t)
			// A bucket default for the worker to try to weaken; the objects carry their own.
			bucketLock := &types.ObjectLockConfiguration{
				ObjectLockEnabled: types.ObjectLockEnabledEnabled,
				Rule:              &types.ObjectLockRule{DefaultRetention: &types.DefaultRetention{Mode: lockMode, Days: aws.Int32(30)}},
			}
			_, err := srv.admin.PutObjectLockConfiguration(ctx, &awss3.PutObjectLockConfigurationInput{Bucket: &bucket, ObjectLockConfiguration: bucketLock})
			if err != nil {
				t.Fatal(err)
			}
			policy := devstack.S3WorkerPolicy(bucket, worker.AccessKey)
			srv.setPolicy(t, bucket, policy)

			cfg := srv.config(bucket)
			cfg.AccessKeyID, cfg.SecretAccessKey = worker.AccessKey, worker.SecretKey
			cfg.LockMode, cfg.PartSize = mode, s3.MinPartSize
			tg := open(t, cfg)
			raw := srv.clientAs(t, worker)

			// What the worker stores: one pack whose retention ends during the test, locked
			// packs (one single, one multipart) and a pack under legal hold.
			put := func(name string, data []byte, opts target.PutOptions) {
				t.Helper()
				opts.SHA256 = sha256.Sum256(data)
				if err := tg.Put(ctx, name, bytes.NewReader(data), int64(len(data)), opts); err != nil {
					t.Fatalf("worker Put(%s): %v", name, err)
				}
			}
			expires := time.Now().Add(3 * time.Second).Truncate(time.Second)
			put("packs/expiring", targettest.Data(4, 100), target.PutOptions{RetainUntil: expires})
			until := time.Now().Add(time.Hour).Truncate(time.Second)
			locked := map[string][]byte{
				"packs/single":    targettest.Data(1, 1000),
				"packs/multipart": targettest.Data(2, s3.MinPartSize+1),
			}
			for name, data := range locked {
				put(name, data, target.PutOptions{RetainUntil: until})
			}
			held := targettest.Data(3, 100)
			put("packs/held", held, target.PutOptions{LegalHold: true})

			// The worker reads and lists what it stored.
			for name, data := range locked {
				targettest.AssertContent(t, tg, name, data)
				info, err := tg.Stat(ctx, name)
				if err != nil || info.SHA256 != sha256.Sum256(data) {
					t.Errorf("worker Stat(%s) = %+v, %v; want its SHA-256", name, info, err)
				}
			}
			var names []string
			err = tg.List(ctx, "packs/", func(i target.Info) error { names = append(names, i.Name); return nil })
			if want := []string{"packs/expiring", "packs/held", "packs/multipart", "packs/single"}; err != nil || !slices.Equal(names, want) {
				t.Errorf("worker List = %v, %v; want %v", names, err, want)
			}
			if n, err := tg.AbortIncomplete(ctx, time.Hour); n != 0 || err != nil {
				t.Errorf("worker AbortIncomplete = %d, %v; want 0, nil", n, err)
			}

			// The locked versions, as root sees them before the worker tries anything.
			versions := map[string]string{}
			for _, name := range []string{"packs/single", "packs/multipart", "packs/held"} {
				head, err := srv.admin.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &bucket, Key: aws.String(name)})
				if err != nil {
					t.Fatal(err)
				}
				versions[name] = aws.ToString(head.VersionId)
			}

			// Through the target.
			for _, name := range []string{"packs/single", "packs/multipart", "packs/held"} {
				if err := tg.Delete(ctx, name); !errors.Is(err, target.ErrLocked) {
					t.Errorf("worker Delete(%s) = %v, want ErrLocked", name, err)
				}
			}
			for name, data := range locked {
				other := targettest.Data(9, len(data))
				err := tg.Put(ctx, name, bytes.NewReader(other), int64(len(other)), target.PutOptions{SHA256: sha256.Sum256(other)})
				if !errors.Is(err, target.ErrExists) {
					t.Errorf("worker Put over %s = %v, want ErrExists", name, err)
				}
			}

			// Raw requests the target never makes, on each locked version: deletes, and for
			// the retained ones weakening the retention.
			shorter := until.Add(-30 * time.Minute)
			for name, vid := range versions {
				key := aws.String(name)
				deleteVersion := func(bypass *bool) func() error {
					return func() error {
						_, err := raw.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &bucket, Key: key, VersionId: &vid,
							BypassGovernanceRetention: bypass})
						return err
					}
				}
				retain := func(m types.ObjectLockRetentionMode, date time.Time, bypass *bool) func() error {
					return func() error {
						_, err := raw.PutObjectRetention(ctx, &awss3.PutObjectRetentionInput{Bucket: &bucket, Key: key, VersionId: &vid,
							Retention: &types.ObjectLockRetention{Mode: m, RetainUntilDate: &date}, BypassGovernanceRetention: bypass})
						return err
					}
				}
				bypass := aws.Bool(true)
				attempts := map[string]func() error{
					"DeleteObject of the version":                                deleteVersion(nil),
					"DeleteObject of the version with BypassGovernanceRetention": deleteVersion(bypass),
				}
				if _, retained := locked[name]; retained {
					attempts["PutObjectRetention with an earlier date"] = retain(lockMode, shorter, nil)
					attempts["PutObjectRetention with an earlier date and BypassGovernanceRetention"] = retain(lockMode, shorter, bypass)
					if mode == s3.LockCompliance {
						attempts["PutObjectRetention downgrading to GOVERNANCE with BypassGovernanceRetention"] =
							retain(types.ObjectLockRetentionModeGovernance, until, bypass)
					}
				}
				for what, call := range attempts {
					wantAccessDenied(t, "worker "+what+" "+name, call())
				}
				// The batch delete answers per object.
				out, err := raw.DeleteObjects(ctx, &awss3.DeleteObjectsInput{Bucket: &bucket, BypassGovernanceRetention: bypass,
					Delete: &types.Delete{Objects: []types.ObjectIdentifier{{Key: key, VersionId: &vid}}}})
				switch {
				case err != nil:
					wantAccessDenied(t, "worker DeleteObjects with BypassGovernanceRetention "+name, err)
				case len(out.Deleted) != 0 || len(out.Errors) != 1 || aws.ToString(out.Errors[0].Code) != "AccessDenied":
					t.Errorf("worker DeleteObjects with BypassGovernanceRetention %s: deleted %d, errors %+v; want one AccessDenied", name, len(out.Deleted), out.Errors)
				}
			}

			// On the bucket.
			for _, a := range []struct {
				what string
				call func() error
			}{
				{"PutObjectLockConfiguration with a shorter default", func() error {
					_, err := raw.PutObjectLockConfiguration(ctx, &awss3.PutObjectLockConfigurationInput{Bucket: &bucket,
						ObjectLockConfiguration: &types.ObjectLockConfiguration{ObjectLockEnabled: types.ObjectLockEnabledEnabled,
							Rule: &types.ObjectLockRule{DefaultRetention: &types.DefaultRetention{Mode: types.ObjectLockRetentionModeGovernance, Days: aws.Int32(1)}}}})
					return err
				}},
				{"PutObjectLockConfiguration without a default", func() error {
					_, err := raw.PutObjectLockConfiguration(ctx, &awss3.PutObjectLockConfigurationInput{Bucket: &bucket,
						ObjectLockConfiguration: &types.ObjectLockConfiguration{ObjectLockEnabled: types.ObjectLockEnabledEnabled}})
					return err
				}},
				{"PutBucketPolicy granting itself s3:*", func() error {
					p := devstack.S3BucketPolicy(bucket, worker.AccessKey, []string{"s3:*"}, []string{"s3:*"})
					_, err := raw.PutBucketPolicy(ctx, &awss3.PutBucketPolicyInput{Bucket: &bucket, Policy: &p})
					return err
				}},
				{"DeleteBucketPolicy", func() error {
					_, err := raw.DeleteBucketPolicy(ctx, &awss3.DeleteBucketPolicyInput{Bucket: &bucket})
					return err
				}},
				{"DeleteBucket", func() error {
					_, err := raw.DeleteBucket(ctx, &awss3.DeleteBucketInput{Bucket: &bucket})
					return err
				}},
			} {
				wantAccessDenied(t, "worker "+a.what, a.call())
			}

			// Allowed by S3 in a versioned bucket, and harmless to the locked version: an
			// overwrite without If-None-Match adds a newer version, a delete without a version
			// adds a delete marker. A refusal would be fine too.
			for name := range locked {
				_, err := raw.PutObject(ctx, &awss3.PutObjectInput{Bucket: &bucket, Key: aws.String(name), Body: strings.NewReader("tampered")})
				if err != nil {
					wantAccessDenied(t, "worker PutObject over "+name, err)
				}
				_, err = raw.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &bucket, Key: aws.String(name)})
				if err != nil {
					wantAccessDenied(t, "worker DeleteObject of "+name+" without a version", err)
				}
			}

			// Nothing lost: every locked version, its bytes and its lock; the bucket, its lock
			// configuration and its policy.
			hold, err := srv.admin.GetObjectLegalHold(ctx, &awss3.GetObjectLegalHoldInput{Bucket: &bucket, Key: aws.String("packs/held"),
				VersionId: aws.String(versions["packs/held"])})
			if err != nil || hold.LegalHold == nil || hold.LegalHold.Status != types.ObjectLockLegalHoldStatusOn {
				t.Errorf("packs/held: legal hold after the worker's attempts: %v; want ON", err)
			}
			for name, data := range map[string][]byte{"packs/single": locked["packs/single"], "packs/multipart": locked["packs/multipart"], "packs/held": held} {
				in := &awss3.GetObjectInput{Bucket: &bucket, Key: aws.String(name), VersionId: aws.String(versions[name])}
				out, err := srv.admin.GetObject(ctx, in)
				if err != nil {
					t.Errorf("root GetObject(%s, version %s): %v", name, versions[name], err)
					continue
				}
				got, err := io.ReadAll(out.Body)
				out.Body.Close()
				if err != nil || !bytes.Equal(got, data) {
					t.Errorf("%s: locked version reads %d bytes (%v), want the %d stored", name, len(got), err, len(data))
				}
				if name == "packs/held" {
					continue // no retention of its own
				}
				ret, err := srv.admin.GetObjectRetention(ctx, &awss3.GetObjectRetentionInput{Bucket: &bucket, Key: aws.String(name), VersionId: in.VersionId})
				if err != nil {
					t.Errorf("root GetObjectRetention(%s, version %s): %v", name, versions[name], err)
				} else if r := ret.Retention; r.Mode != lockMode || !aws.ToTime(r.RetainUntilDate).Equal(until) {
					t.Errorf("%s: lock is %q until %v, want %s until %v", name, r.Mode, aws.ToTime(r.RetainUntilDate), mode, until)
				}
			}
			if _, err := srv.admin.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: &bucket}); err != nil {
				t.Errorf("bucket after the worker's DeleteBucket: %v", err)
			}
			lc, err := srv.admin.GetObjectLockConfiguration(ctx, &awss3.GetObjectLockConfigurationInput{Bucket: &bucket})
			if err != nil {
				t.Error(err)
			} else if r := lc.ObjectLockConfiguration.Rule; r == nil || r.DefaultRetention == nil ||
				r.DefaultRetention.Mode != lockMode || aws.ToInt32(r.DefaultRetention.Days) != 30 {
				t.Errorf("bucket lock configuration changed: %+v", lc.ObjectLockConfiguration.Rule)
			}
			pol, err := srv.admin.GetBucketPolicy(ctx, &awss3.GetBucketPolicyInput{Bucket: &bucket})
			if err != nil {
				t.Errorf("bucket policy after the worker's attempts: %v", err)
			} else if aws.ToString(pol.Policy) != policy {
				t.Errorf("bucket policy = %s, want it unchanged: %s", aws.ToString(pol.Policy), policy)
			}

			// Once retention has ended the worker deletes for good, as retention and repair need.
			time.Sleep(time.Until(expires) + time.Second)
			if err := tg.Delete(ctx, "packs/expiring"); err != nil {
				t.Errorf("worker Delete after retention: %v", err)
			}
			assertNoVersions(t, srv, bucket, "packs/expiring")

			// The bypass the worker was refused is the permission it lacks, not the request:
			// root, which has it, removes a GOVERNANCE version; COMPLIANCE refuses everyone.
			put("packs/control", targettest.Data(5, 100), target.PutOptions{RetainUntil: until})
			head, err := srv.admin.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &bucket, Key: aws.String("packs/control")})
			if err != nil {
				t.Fatal(err)
			}
			_, err = srv.admin.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &bucket, Key: aws.String("packs/control"),
				VersionId: head.VersionId, BypassGovernanceRetention: aws.Bool(true)})
			if mode == s3.LockGovernance && err != nil {
				t.Errorf("root DeleteObject with BypassGovernanceRetention of a GOVERNANCE version: %v", err)
			}
			if mode == s3.LockCompliance {
				wantAccessDenied(t, "root DeleteObject with BypassGovernanceRetention of a COMPLIANCE version", err)
			}
		})
	}

	// Retention set by the creating request needs s3:PutObjectRetention: without it the gateway
	// refuses the locked Put, and the same Put unlocked succeeds.
	t.Run("RetentionNeedsPutObjectRetention", func(t *testing.T) {
		t.Parallel()
		bucket := srv.newBucket(t)
		srv.setPolicy(t, bucket, devstack.S3BucketPolicy(bucket, worker.AccessKey,
			[]string{"s3:ListBucket"}, []string{"s3:PutObject", "s3:GetObject"}))
		cfg := srv.config(bucket)
		cfg.AccessKeyID, cfg.SecretAccessKey = worker.AccessKey, worker.SecretKey
		tg := open(t, cfg)
		data := []byte("pack")
		opts := target.PutOptions{SHA256: sha256.Sum256(data), RetainUntil: time.Now().Add(time.Hour)}
		err := tg.Put(t.Context(), "p", bytes.NewReader(data), int64(len(data)), opts)
		wantAccessDenied(t, "Put with retention without s3:PutObjectRetention", err)
		if !errors.Is(err, target.ErrPermanent) {
			t.Errorf("Put with retention without s3:PutObjectRetention = %v, want a permanent error", err)
		}
		opts.RetainUntil = time.Time{}
		if err := tg.Put(t.Context(), "p", bytes.NewReader(data), int64(len(data)), opts); err != nil {
			t.Fatalf("Put without retention: %v", err)
		}
		targettest.AssertContent(t, tg, "p", data)
	})
}
