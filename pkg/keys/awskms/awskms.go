// Package awskms is a KEK backend on AWS KMS: a [keys.Ring] whose versions are KMS keys.
//
// # Layout
//
// Every KEK version is a separate symmetric KMS key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT). Each is
// tagged with the ring's alias, which scopes IAM policies to the ring's keys, and, except the
// first, with the id of the version before it:
//
//	custos-ring     = alias/custos-kek      (Config.Alias)
//	custos-previous = <KMS key id of the previous version>
//
// The alias points at the active version. Open resolves the alias, then follows custos-previous
// back until a key that is pending deletion or gone: those are the versions the ring holds
// ([Ring.Holds]). Open creates the first key and the alias when asked to and the alias is
// missing.
//
// Rotate creates a new key tagged with the active one as its predecessor and points the alias
// at it. This is not KMS automatic key rotation: automatic rotation keeps every earlier key
// material inside the same key and decrypts with it for the key's whole life, so no erasure
// could ever complete. A new key per version is what lets DestroyRetired make keys wrapped by
// older versions unreadable.
//
// DestroyRetired disables every version but the active one, oldest first, and schedules it for
// deletion with the shortest pending window KMS allows (7 days). A disabled or pending key
// decrypts nothing from that moment on; the window only delays the removal of the key
// material. Cancelling a deletion inside the window (an operator with kms:CancelKeyDeletion)
// would bring the version back: restrict that permission.
//
// # Format
//
//	wrapped: 0x03 ‖ CiphertextBlob of KMS Encrypt(active key, DEK,
//	         EncryptionContext {"custos": "dek-v1", "scope": aad})
//
// The encryption context plays the part of the additional data "custos-dek-v1" ‖ scope of the
// key file. An aad that is not valid UTF-8 goes in as "scope-hex": hex(aad) instead, so no two
// aads share a context. KMS finds the key from the blob on Decrypt. KeyID is "aws-" and the KMS
// key id.
//
// # Errors
//
// Unwrap returns keys.ErrUnwrap when KMS rejects the ciphertext: another context, modified
// bytes, a disabled or pending-deletion or deleted key (InvalidCiphertextException,
// KMSInvalidStateException, DisabledException, NotFoundException, IncorrectKeyException, and
// AccessDeniedException, which KMS gives for a ciphertext whose key is gone or out of reach
// and which an IAM policy that lacks kms:Decrypt also produces). Network failures, throttling
// and other service errors are returned wrapped and never match ErrUnwrap, so a caller can tell
// an outage from a key that is gone. Errors of Encrypt and Decrypt keep the service's error code
// and drop its message, which could quote the request.
//
// # Least privilege
//
// A worker needs kms:Encrypt, kms:Decrypt, kms:DescribeKey and kms:ListResourceTags on the keys
// tagged custos-ring = the alias; the operator who rotates and destroys also needs
// kms:CreateKey, kms:TagResource, kms:CreateAlias, kms:UpdateAlias, kms:DisableKey and
// kms:ScheduleKeyDeletion. docs/kms-aws.md gives both policies.
package awskms

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/custos-dev/custos/pkg/keys"
)

var _ keys.Ring = (*Ring)(nil)

const (
	// DefaultAlias is the alias of the active KEK version when Config.Alias is empty.
	DefaultAlias = "alias/custos-kek"
	// KeyIDPrefix starts every KeyID of this backend.
	KeyIDPrefix = "aws-"
	// TagRing is the tag naming the alias of the ring a key belongs to.
	TagRing = "custos-ring"
	// TagPrevious is the tag naming the KMS key id of the version before a key.
	TagPrevious = "custos-previous"
	// PendingWindowDays is the deletion window DestroyRetired asks for: the shortest KMS allows.
	PendingWindowDays = 7

	wrapVersion = 0x03
	// maxPlaintext and maxCiphertext are KMS's limits on Encrypt and Decrypt.
	maxPlaintext  = 4096
	maxCiphertext = 6144
	// maxVersions stops a walk along custos-previous tags that loops.
	maxVersions = 10000
	// cleanupTimeout bounds the removal of a key a failed Open or Rotate created.
	cleanupTimeout = 30 * time.Second
)

// ErrAliasNotFound means the ring's alias does not exist and Open was not asked to create it.
var ErrAliasNotFound = errors.New("awskms: KEK alias not found")

// Config says how to reach KMS and which ring to use.
type Config struct {
	// Endpoint overrides the KMS endpoint (an emulator, a VPC endpoint); empty for AWS.
	Endpoint string
	// Region of the keys; empty for the SDK's default (AWS_REGION, shared config).
	Region string
	// Alias names the ring: "alias/…", DefaultAlias when empty.
	Alias string
	// AccessKeyID and SecretAccessKey are static credentials; when empty the SDK's default
	// chain (environment, shared files, instance or task role) is used.
	AccessKeyID     string
	SecretAccessKey string
}

// String shows the configuration without the secret key.
func (c Config) String() string {
	secret := ""
	if c.SecretAccessKey != "" {
		secret = "<redacted>"
	}
	return fmt.Sprintf("awskms.Config{Endpoint:%q Region:%q Alias:%q AccessKeyID:%q SecretAccessKey:%q}",
		c.Endpoint, c.Region, c.Alias, c.AccessKeyID, secret)
}

// GoString is String, so %#v does not print the secret either.
func (c Config) GoString() string { return c.String() }

// Ring is the KEK of Custos in AWS KMS. It is safe for concurrent use; Rotate and
// DestroyRetired must not run concurrently with each other (see keys.Ring).
type Ring struct {
	client    *kms.Client
	transport *http.Transport
	alias     string
	closeOnce sync.Once

	mu     sync.RWMutex
	active string          // KMS key id of the active version
	held   map[string]bool // KMS key ids of the active and the retired versions
}

// version is one KMS key of the ring.
type version struct {
	id    string
	state types.KeyState
}

// Open opens the ring named by cfg.Alias. With create, a missing alias is created with a first
// key. Without it, a missing alias is ErrAliasNotFound.
func Open(ctx context.Context, cfg Config, create bool) (*Ring, error) {
	alias := cfg.Alias
	if alias == "" {
		alias = DefaultAlias
	}
	if !strings.HasPrefix(alias, "alias/") || strings.HasPrefix(alias, "alias/aws/") ||
		len(alias) <= len("alias/") || len(alias) > 256 {
		return nil, fmt.Errorf("awskms: config: alias %q must be \"alias/<name>\", not under alias/aws/", alias)
	}
	opts := []func(*config.LoadOptions) error{}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		// The SDK's message names files and profiles, not secrets.
		return nil, fmt.Errorf("awskms: load AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, errors.New("awskms: config: no region configured (Config.Region, AWS_REGION or shared config)")
	}
	// A transport of our own (with the CA bundle the shared config may have set), so Close can
	// release its connections.
	var tr *http.Transport
	if bc, ok := awsCfg.HTTPClient.(*awshttp.BuildableClient); ok {
		tr = bc.GetTransport()
	} else {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	awsCfg.HTTPClient = &http.Client{Transport: tr}
	client := kms.NewFromConfig(awsCfg, func(o *kms.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	r := &Ring{client: client, transport: tr, alias: alias}
	if err := r.open(ctx, create); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Ring) open(ctx context.Context, create bool) error {
	md, err := r.describeAlias(ctx)
	if errors.Is(err, ErrAliasNotFound) && create {
		md, err = r.create(ctx)
	}
	if err != nil {
		return err
	}
	vs, err := r.walk(ctx, md)
	if err != nil {
		return err
	}
	r.set(vs)
	return nil
}

// create makes the first key and the alias. When another process created the alias first, the
// key is scheduled for deletion and the other process's alias is used.
func (r *Ring) create(ctx context.Context) (*types.KeyMetadata, error) {
	md, err := r.createKey(ctx, "")
	if err != nil {
		return nil, err
	}
	_, err = r.client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: &r.alias, TargetKeyId: md.KeyId})
	if err == nil {
		return md, nil
	}
	r.discard(ctx, *md.KeyId)
	var exists *types.AlreadyExistsException
	if errors.As(err, &exists) {
		return r.describeAlias(ctx)
	}
	return nil, fmt.Errorf("awskms: create alias %s: %w", r.alias, err)
}

// createKey makes a new version whose predecessor is previous ("" for the first).
func (r *Ring) createKey(ctx context.Context, previous string) (*types.KeyMetadata, error) {
	tags := []types.Tag{{TagKey: aws.String(TagRing), TagValue: aws.String(r.alias)}}
	if previous != "" {
		tags = append(tags, types.Tag{TagKey: aws.String(TagPrevious), TagValue: aws.String(previous)})
	}
	out, err := r.client.CreateKey(ctx, &kms.CreateKeyInput{
		KeySpec:     types.KeySpecSymmetricDefault,
		KeyUsage:    types.KeyUsageTypeEncryptDecrypt,
		Description: aws.String("Custos KEK version of " + r.alias),
		Tags:        tags,
	})
	if err != nil {
		return nil, fmt.Errorf("awskms: create KEK version for %s: %w", r.alias, err)
	}
	if out.KeyMetadata == nil || out.KeyMetadata.KeyId == nil {
		return nil, errors.New("awskms: create KEK version: response without key metadata")
	}
	return out.KeyMetadata, nil
}

// discard schedules the deletion of a key that a failed Open or Rotate created and never
// used. It is best effort: the key wraps nothing, and a leftover costs only its monthly fee.
func (r *Ring) discard(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	_, _ = r.client.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{
		KeyId: &id, PendingWindowInDays: aws.Int32(PendingWindowDays)})
}

// describeAlias returns the metadata of the key the alias points at.
func (r *Ring) describeAlias(ctx context.Context) (*types.KeyMetadata, error) {
	md, err := r.describe(ctx, r.alias)
	var nf *types.NotFoundException
	if errors.As(err, &nf) {
		return nil, fmt.Errorf("%w: %s does not exist in this account and region (open with create, or create the key and alias by hand)",
			ErrAliasNotFound, r.alias)
	}
	if err != nil {
		return nil, fmt.Errorf("awskms: describe %s: %w", r.alias, err)
	}
	return md, nil
}

func (r *Ring) describe(ctx context.Context, keyID string) (*types.KeyMetadata, error) {
	out, err := r.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &keyID})
	if err != nil {
		return nil, err
	}
	if out.KeyMetadata == nil || out.KeyMetadata.KeyId == nil {
		return nil, errors.New("response without key metadata")
	}
	return out.KeyMetadata, nil
}

// walk returns the ring's versions from the active one (md) back along custos-previous, up to
// the first that is pending deletion or gone. DestroyRetired works oldest first, so every key
// before that one is pending or gone too.
func (r *Ring) walk(ctx context.Context, md *types.KeyMetadata) ([]version, error) {
	id := *md.KeyId
	if md.KeyState != types.KeyStateEnabled {
		return nil, fmt.Errorf("awskms: the active KEK version %s%s behind %s is %s, not Enabled",
			KeyIDPrefix, id, r.alias, md.KeyState)
	}
	seen := map[string]bool{}
	var vs []version
	for {
		if seen[id] || len(vs) >= maxVersions {
			return nil, fmt.Errorf("awskms: the %s tags of %s loop", TagPrevious, r.alias)
		}
		seen[id] = true
		tags, err := r.tags(ctx, id)
		if err != nil {
			return nil, err
		}
		if tags[TagRing] != r.alias {
			return nil, fmt.Errorf("awskms: KMS key %s, a version of %s, is not tagged %s=%s",
				id, r.alias, TagRing, r.alias)
		}
		vs = append(vs, version{id: id, state: md.KeyState})
		prev := tags[TagPrevious]
		if prev == "" {
			return vs, nil
		}
		md, err = r.describe(ctx, prev)
		var nf *types.NotFoundException
		if errors.As(err, &nf) {
			return vs, nil // deleted at the end of its pending window
		}
		if err != nil {
			return nil, fmt.Errorf("awskms: describe KEK version %s%s: %w", KeyIDPrefix, prev, err)
		}
		if md.KeyState == types.KeyStatePendingDeletion {
			return vs, nil
		}
		id = *md.KeyId
	}
}

// tags returns a key's tags.
func (r *Ring) tags(ctx context.Context, id string) (map[string]string, error) {
	tags := map[string]string{}
	in := &kms.ListResourceTagsInput{KeyId: &id}
	for {
		out, err := r.client.ListResourceTags(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("awskms: list tags of KEK version %s%s: %w", KeyIDPrefix, id, err)
		}
		for _, t := range out.Tags {
			tags[aws.ToString(t.TagKey)] = aws.ToString(t.TagValue)
		}
		if !out.Truncated || out.NextMarker == nil {
			return tags, nil
		}
		in.Marker = out.NextMarker
	}
}

// set makes vs (active first) the ring's state: the active and every enabled retired version
// are held.
func (r *Ring) set(vs []version) {
	held := map[string]bool{}
	for i, v := range vs {
		if i == 0 || v.state == types.KeyStateEnabled {
			held[v.id] = true
		}
	}
	r.mu.Lock()
	r.active, r.held = vs[0].id, held
	r.mu.Unlock()
}

func (r *Ring) activeID() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.active
}

// current reads the alias and checks it still points at this ring's active version: a process
// that missed another's rotation must not rotate or destroy.
func (r *Ring) current(ctx context.Context) (*types.KeyMetadata, error) {
	md, err := r.describeAlias(ctx)
	if err != nil {
		return nil, err
	}
	if active := r.activeID(); *md.KeyId != active {
		return nil, fmt.Errorf("awskms: %s points at %s%s, not at this ring's active version %s%s: %w",
			r.alias, KeyIDPrefix, *md.KeyId, KeyIDPrefix, active, keys.ErrStaleKEK)
	}
	return md, nil
}

// KeyID names the active version: "aws-" and its KMS key id.
func (r *Ring) KeyID() string { return KeyIDPrefix + r.activeID() }

// Alias returns the alias that names the ring.
func (r *Ring) Alias() string { return r.alias }

// Holds reports whether keyID names the active version or a retired one not yet destroyed, as
// of Open and this ring's own Rotate and DestroyRetired.
func (r *Ring) Holds(keyID string) bool {
	id, ok := strings.CutPrefix(keyID, KeyIDPrefix)
	if !ok {
		return false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.held[id]
}

// encryptionContext binds a wrapped key to its scope and to this use.
func encryptionContext(aad []byte) map[string]string {
	if utf8.Valid(aad) {
		return map[string]string{"custos": "dek-v1", "scope": string(aad)}
	}
	return map[string]string{"custos": "dek-v1", "scope-hex": hex.EncodeToString(aad)}
}

// Wrap encrypts dek under the active version, bound to aad.
func (r *Ring) Wrap(ctx context.Context, dek, aad []byte) ([]byte, error) {
	if len(dek) == 0 || len(dek) > maxPlaintext {
		return nil, fmt.Errorf("awskms: wrap: a data key of %d bytes, want 1 to %d", len(dek), maxPlaintext)
	}
	active := r.activeID()
	out, err := r.client.Encrypt(ctx, &kms.EncryptInput{
		KeyId:               &active,
		Plaintext:           dek,
		EncryptionContext:   encryptionContext(aad),
		EncryptionAlgorithm: types.EncryptionAlgorithmSpecSymmetricDefault,
	})
	if err != nil {
		return nil, fmt.Errorf("awskms: wrap under %s%s: %w", KeyIDPrefix, active, scrub(err))
	}
	if len(out.CiphertextBlob) == 0 {
		return nil, errors.New("awskms: wrap: empty ciphertext in the response")
	}
	w := make([]byte, 1+len(out.CiphertextBlob))
	w[0] = wrapVersion
	copy(w[1:], out.CiphertextBlob)
	return w, nil
}

// Unwrap decrypts a key made by Wrap with the same aad, under any version KMS still holds for
// this ring. A rejected ciphertext is keys.ErrUnwrap; an outage is not.
func (r *Ring) Unwrap(ctx context.Context, wrapped, aad []byte) ([]byte, error) {
	if len(wrapped) < 2 || wrapped[0] != wrapVersion || len(wrapped)-1 > maxCiphertext {
		return nil, keys.ErrUnwrap
	}
	out, err := r.client.Decrypt(ctx, &kms.DecryptInput{
		CiphertextBlob:      wrapped[1:],
		EncryptionContext:   encryptionContext(aad),
		EncryptionAlgorithm: types.EncryptionAlgorithmSpecSymmetricDefault,
	})
	if err != nil {
		if code, ok := rejected(err); ok {
			return nil, fmt.Errorf("awskms: unwrap: KMS %s: %w", code, keys.ErrUnwrap)
		}
		return nil, fmt.Errorf("awskms: unwrap: %w", scrub(err))
	}
	// KMS opens anything the caller may decrypt; only the ring's own versions count.
	id := aws.ToString(out.KeyId)
	if i := strings.LastIndex(id, ":key/"); i >= 0 {
		id = id[i+len(":key/"):]
	}
	if !r.Holds(KeyIDPrefix + id) {
		clear(out.Plaintext)
		return nil, fmt.Errorf("awskms: unwrap: the ciphertext's KMS key is not a version of %s: %w", r.alias, keys.ErrUnwrap)
	}
	return out.Plaintext, nil
}

// Rotate creates a version tagged with the active one as its predecessor and points the alias
// at it. The previous version stays enabled (retired) until DestroyRetired.
func (r *Ring) Rotate(ctx context.Context) (string, string, error) {
	md, err := r.current(ctx)
	if err != nil {
		return "", "", err
	}
	old := *md.KeyId
	nmd, err := r.createKey(ctx, old)
	if err != nil {
		return "", "", err
	}
	id := *nmd.KeyId
	if _, err := r.client.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: &r.alias, TargetKeyId: &id}); err != nil {
		r.discard(ctx, id)
		return "", "", fmt.Errorf("awskms: point %s at the new KEK version: %w", r.alias, err)
	}
	r.mu.Lock()
	r.active = id
	r.held[id] = true
	r.mu.Unlock()
	return KeyIDPrefix + old, KeyIDPrefix + id, nil
}

// Retired returns the versions KMS still has enabled, other than the active one.
func (r *Ring) Retired(ctx context.Context) ([]string, error) {
	vs, err := r.versions(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, v := range vs[1:] {
		if v.state == types.KeyStateEnabled {
			ids = append(ids, KeyIDPrefix+v.id)
		}
	}
	return ids, nil
}

// versions reads the ring's versions from KMS, from this ring's active one back.
func (r *Ring) versions(ctx context.Context) ([]version, error) {
	active := r.activeID()
	md, err := r.describe(ctx, active)
	if err != nil {
		return nil, fmt.Errorf("awskms: describe KEK version %s%s: %w", KeyIDPrefix, active, err)
	}
	return r.walk(ctx, md)
}

// DestroyRetired disables every version but the active one and schedules it for deletion,
// oldest first, and returns their ids. The versions are unusable as soon as they are disabled.
// A retry after a failure finishes the versions left; once all are done it returns none.
func (r *Ring) DestroyRetired(ctx context.Context) ([]string, error) {
	md, err := r.current(ctx)
	if err != nil {
		return nil, err
	}
	vs, err := r.walk(ctx, md)
	if err != nil {
		return nil, err
	}
	var gone []string
	for i := len(vs) - 1; i >= 1; i-- {
		v := vs[i]
		if v.state == types.KeyStateEnabled {
			if _, err := r.client.DisableKey(ctx, &kms.DisableKeyInput{KeyId: &v.id}); err != nil {
				return gone, fmt.Errorf("awskms: disable KEK version %s%s: %w", KeyIDPrefix, v.id, err)
			}
		}
		r.mu.Lock()
		delete(r.held, v.id)
		r.mu.Unlock()
		_, err := r.client.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{
			KeyId: &v.id, PendingWindowInDays: aws.Int32(PendingWindowDays)})
		if err != nil {
			return gone, fmt.Errorf("awskms: schedule deletion of KEK version %s%s: %w", KeyIDPrefix, v.id, err)
		}
		gone = append(gone, KeyIDPrefix+v.id)
	}
	return gone, nil
}

// Close releases idle connections. It is safe to call twice.
func (r *Ring) Close() error {
	r.closeOnce.Do(r.transport.CloseIdleConnections)
	return nil
}
