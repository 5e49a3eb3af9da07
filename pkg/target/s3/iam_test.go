package s3_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/custos-dev/custos/pkg/devstack"
)

// createUser creates u in the gateway's IAM with the root credential.
func (s *server) createUser(t testing.TB, u devstack.S3User) {
	t.Helper()
	root := aws.Credentials{AccessKeyID: accessKey, SecretAccessKey: secretKey}
	if err := devstack.CreateS3User(t.Context(), s.endpoint, root, u); err != nil {
		t.Fatal(err)
	}
}

// setPolicy sets bucket's policy with the root credential.
func (s *server) setPolicy(t testing.TB, bucket, policy string) {
	t.Helper()
	_, err := s.admin.PutBucketPolicy(t.Context(), &awss3.PutBucketPolicyInput{Bucket: &bucket, Policy: &policy})
	if err != nil {
		t.Fatalf("put bucket policy on %s: %v", bucket, err)
	}
}

// clientAs is a plain S3 client of s signed with u's credential, for requests the target
// never makes. It makes one attempt per call, so a refusal is the service's first answer.
func (s *server) clientAs(t testing.TB, u devstack.S3User) *awss3.Client {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return awss3.New(awss3.Options{
		BaseEndpoint: aws.String(s.endpoint),
		Region:       "us-east-1",
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(u.AccessKey, u.SecretKey, ""),
		HTTPClient:   &http.Client{Transport: tr},
		Retryer:      aws.NopRetryer{},
	})
}

// wantAccessDenied fails t unless err is the service's refusal: S3 error code AccessDenied
// with HTTP status 403. S3 answers a missing permission and an Object Lock refusal alike.
func wantAccessDenied(t testing.TB, what string, err error) {
	t.Helper()
	var ae smithy.APIError
	var re *awshttp.ResponseError
	if !errors.As(err, &ae) || ae.ErrorCode() != "AccessDenied" || !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusForbidden {
		t.Errorf("%s = %v, want 403 AccessDenied", what, err)
	}
}
