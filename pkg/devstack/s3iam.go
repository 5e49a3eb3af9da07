package devstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// S3User is an account of the S3 emulator's own IAM (VersityGW started with --iam-dir).
type S3User struct {
	AccessKey, SecretKey string
	// Role is "user" (only what bucket policies grant), "userplus" (a user that may also
	// create buckets) or "admin" (everything, like the root credential).
	Role string
}

// CreateS3User creates u through the admin API of the S3 emulator at endpoint, signed with the
// root credential. The emulator must run with --iam-dir; an existing access key is an error.
func CreateS3User(ctx context.Context, endpoint string, root aws.Credentials, u S3User) error {
	body, err := xml.Marshal(struct {
		XMLName xml.Name `xml:"Account"`
		Access  string   `xml:"Access"`
		Secret  string   `xml:"Secret"`
		Role    string   `xml:"Role"`
	}{Access: u.AccessKey, Secret: u.SecretKey, Role: u.Role})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, strings.TrimSuffix(endpoint, "/")+"/create-user", bytes.NewReader(body))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	payload := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", payload)
	if err := v4.NewSigner().SignHTTP(ctx, root, req, payload, "s3", "us-east-1", time.Now()); err != nil {
		return fmt.Errorf("devstack: sign create-user: %w", err)
	}
	// A transport of its own, closed here, so no connection outlives the call.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("devstack: create S3 user %s: %w", u.AccessKey, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	// The error body names the code (e.g. XAdminUserExists) and never the secret.
	var e struct{ Code, Message string }
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if xml.Unmarshal(msg, &e) != nil {
		e.Message = string(msg)
	}
	return fmt.Errorf("devstack: create S3 user %s: %s: %s %s", u.AccessKey, resp.Status, e.Code, e.Message)
}

// The S3 actions a Custos worker needs (docs/targets/s3.md, "Least privilege"): store objects
// with retention or a legal hold set on the creating request, read and list them, delete
// versions (which Object Lock refuses while they are locked) and clean up multipart uploads.
// Deliberately absent: s3:BypassGovernanceRetention, s3:PutBucketObjectLockConfiguration,
// s3:PutBucketPolicy, s3:DeleteBucketPolicy and s3:DeleteBucket.
var (
	s3WorkerBucketActions = []string{"s3:ListBucket", "s3:ListBucketMultipartUploads"}
	s3WorkerObjectActions = []string{
		"s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:DeleteObjectVersion",
		"s3:PutObjectRetention", "s3:GetObjectRetention", "s3:PutObjectLegalHold", "s3:GetObjectLegalHold",
		"s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
	}
)

// S3WorkerPolicy returns a bucket policy that allows principal (an access key of the emulator's
// IAM) what a Custos worker needs on bucket, and nothing else.
func S3WorkerPolicy(bucket, principal string) string {
	return S3BucketPolicy(bucket, principal, s3WorkerBucketActions, s3WorkerObjectActions)
}

// S3BucketPolicy returns a bucket policy that allows principal bucketActions on bucket and
// objectActions on its objects.
func S3BucketPolicy(bucket, principal string, bucketActions, objectActions []string) string {
	type statement struct {
		Effect    string
		Principal map[string][]string
		Action    []string
		Resource  []string
	}
	who := map[string][]string{"AWS": {principal}}
	var st []statement
	if len(bucketActions) > 0 {
		st = append(st, statement{"Allow", who, bucketActions, []string{"arn:aws:s3:::" + bucket}})
	}
	if len(objectActions) > 0 {
		st = append(st, statement{"Allow", who, objectActions, []string{"arn:aws:s3:::" + bucket + "/*"}})
	}
	b, err := json.Marshal(struct {
		Version   string
		Statement []statement
	}{"2012-10-17", st})
	if err != nil {
		panic(err) // only strings and slices of them: cannot fail
	}
	return string(b)
}
