package s3

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Profile describes how to reach an S3-compatible provider and which parts of the S3 API it
// implements as the target needs them. The target adapts to a missing feature instead of
// assuming it (see the fields), so a wrong "true" weakens a guarantee while a wrong "false"
// only costs a request.
type Profile struct {
	// Title is the provider's name for documentation and errors.
	Title string
	// Endpoint is a URL template; "{region}" and "{account}" are replaced by Config.Region and
	// Config.Account. Empty: the endpoint must be configured (or, for AWS, is resolved by the SDK).
	Endpoint string
	// Region is the default signing region; empty means it must be configured.
	Region string
	// PathStyle forces path-style addressing (https://host/bucket/key).
	PathStyle bool
	// ChecksumSHA256 means the service verifies x-amz-checksum-sha256 on PutObject and
	// UploadPart. Without it the target sends Content-MD5 where Object Lock needs an integrity
	// header, and otherwise relies on its own hashing and the signed payload hash.
	ChecksumSHA256 bool
	// ConditionalCreate means PutObject and CompleteMultipartUpload honour If-None-Match: "*"
	// atomically. Without it the target still sends the header but also checks with HeadObject
	// first, which leaves a race between concurrent Puts of one name.
	ConditionalCreate bool
	// ObjectLock means per-object retention and legal hold headers (x-amz-object-lock-*) are
	// supported. Without it a Put that asks for a lock fails instead of storing an unlocked
	// object.
	ObjectLock bool
	// Tested says how the profile was verified; empty means from public documentation only.
	Tested string
}

var profiles = map[string]Profile{
	"aws": {
		Title:          "Amazon S3",
		ChecksumSHA256: true, ConditionalCreate: true, ObjectLock: true,
	},
	"generic": {
		Title: "S3-compatible service (unknown features)",
		// Lock headers are sent; a service without Object Lock rejects them or, worse,
		// ignores them: check with a test object before relying on it.
		ObjectLock: true,
	},
	"versitygw": {
		Title:     "Versity S3 Gateway",
		Region:    "us-east-1",
		PathStyle: true, ChecksumSHA256: true, ConditionalCreate: true, ObjectLock: true,
		Tested: "conformance suite, Object Lock, crash and large-stream tests against VersityGW v1.8.0 (posix backend with versioning)",
	},
	"minio": {
		Title:     "MinIO",
		Region:    "us-east-1",
		PathStyle: true, ChecksumSHA256: true, ConditionalCreate: true, ObjectLock: true,
	},
	"wasabi": {
		Title:      "Wasabi",
		Endpoint:   "https://s3.{region}.wasabisys.com",
		Region:     "us-east-1",
		ObjectLock: true,
	},
	"b2": {
		Title:      "Backblaze B2 (S3-compatible API)",
		Endpoint:   "https://s3.{region}.backblazeb2.com",
		ObjectLock: true,
	},
	"ibm": {
		Title:      "IBM Cloud Object Storage",
		Endpoint:   "https://s3.{region}.cloud-object-storage.appdomain.cloud",
		Region:     "us-south",
		ObjectLock: true,
	},
	"idrive": {
		Title:      "IDrive e2",
		Endpoint:   "https://s3.{region}.idrivee2.com",
		Region:     "us-east-1",
		PathStyle:  true,
		ObjectLock: true,
	},
	"r2": {
		Title:          "Cloudflare R2",
		Endpoint:       "https://{account}.r2.cloudflarestorage.com",
		Region:         "auto",
		ChecksumSHA256: true, ConditionalCreate: true,
	},
}

// LookupProfile returns the profile of a provider ("aws", "generic", "versitygw", "minio",
// "wasabi", "b2", "ibm", "idrive", "r2").
func LookupProfile(name string) (Profile, bool) {
	p, ok := profiles[strings.ToLower(name)]
	return p, ok
}

// Profiles returns a copy of every known profile by provider name.
func Profiles() map[string]Profile { return maps.Clone(profiles) }

// ProfileNames lists the known providers in lexical order.
func ProfileNames() []string { return slices.Sorted(maps.Keys(profiles)) }

func (p Profile) endpoint(region, account string) (string, error) {
	ep := p.Endpoint
	if strings.Contains(ep, "{region}") {
		if region == "" {
			return "", fmt.Errorf("s3: config: %s needs a region for its endpoint %s", p.Title, ep)
		}
		ep = strings.ReplaceAll(ep, "{region}", region)
	}
	if strings.Contains(ep, "{account}") {
		if account == "" {
			return "", fmt.Errorf("s3: config: %s needs Account for its endpoint %s", p.Title, ep)
		}
		ep = strings.ReplaceAll(ep, "{account}", account)
	}
	return ep, nil
}
