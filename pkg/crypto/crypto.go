package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Format constants of version 1.
const (
	Version     = 0x01
	KeySize     = 32    // data key (DEK) length
	HeaderSize  = 40    // version ‖ salt ‖ nonce prefix
	SegmentSize = 65536 // plaintext bytes per full segment
	TagSize     = 16    // GCM tag per segment
	MaxFieldLen = math.MaxUint16
)

const (
	infoKey       = "custos-item-v1"
	infoNonce     = "custos-item-nonce-v1"
	saltSize      = 32
	prefixSize    = 7
	nonceSize     = 12
	sealedSegment = SegmentSize + TagSize
	// maxSegments bounds the u32 segment counter in the nonce.
	maxSegments = math.MaxUint32 + 1
)

// Named errors, matched with errors.Is. None carries key material or plaintext.
var (
	// ErrAuth means the ciphertext was not produced by this key and aad, or was modified:
	// a bad tag, truncation, trailing bytes, reordered segments, a wrong key or wrong aad.
	ErrAuth = errors.New("crypto: message authentication failed")
	// ErrUnsupportedVersion means the header carries a version this code does not know.
	ErrUnsupportedVersion = errors.New("crypto: unsupported format version")
	// ErrKeySize means the data key is not KeySize bytes.
	ErrKeySize = errors.New("crypto: data key must be 32 bytes")
	// ErrClosed means Write was called after Close.
	ErrClosed = errors.New("crypto: writer closed")
	// ErrTooLarge means the plaintext needs more segments than the u32 counter allows (256 TiB).
	ErrTooLarge = errors.New("crypto: plaintext too large for one item")
)

// Nonce is the per-item salt and nonce prefix stored in the header.
type Nonce struct {
	Salt   [saltSize]byte
	Prefix [prefixSize]byte
}

// RandomNonce returns a salt and prefix from crypto/rand, for items that are not re-encrypted
// deterministically.
func RandomNonce() (Nonce, error) {
	var b [saltSize + prefixSize]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Nonce{}, fmt.Errorf("crypto: random nonce: %w", err)
	}
	return splitNonce(b[:]), nil
}

// DeriveNonce derives the salt and prefix from the data key, the item id and the SHA-256 of
// exactly the plaintext that will be encrypted, so that re-encrypting the same item yields the
// same bytes (see the package doc for why this is safe). It panics if itemID is longer than
// MaxFieldLen; identifiers must be bounded where they enter the system.
func DeriveNonce(dek []byte, itemID string, contentDigest [32]byte) Nonce {
	info := make([]byte, 0, len(infoNonce)+2+len(itemID)+len(contentDigest))
	info = append(info, infoNonce...)
	info = appendField(info, itemID)
	info = append(info, contentDigest[:]...)
	b, err := hkdf.Key(sha256.New, dek, nil, string(info), saltSize+prefixSize)
	if err != nil {
		// Unreachable: 39 bytes is far below the HKDF-SHA256 output limit.
		panic("crypto: derive nonce: " + err.Error())
	}
	return splitNonce(b)
}

func splitNonce(b []byte) Nonce {
	var n Nonce
	copy(n.Salt[:], b[:saltSize])
	copy(n.Prefix[:], b[saltSize:])
	return n
}

func (n Nonce) header() [HeaderSize]byte {
	var h [HeaderSize]byte
	h[0] = Version
	copy(h[1:], n.Salt[:])
	copy(h[1+saltSize:], n.Prefix[:])
	return h
}

// AAD encodes fields as u16(len) ‖ bytes each, so that distinct field lists never produce the
// same associated data. It panics if a field is longer than MaxFieldLen; identifiers must be
// bounded where they enter the system.
func AAD(fields ...string) []byte {
	size := 0
	for _, f := range fields {
		size += 2 + len(f)
	}
	b := make([]byte, 0, size)
	for _, f := range fields {
		b = appendField(b, f)
	}
	return b
}

func appendField(b []byte, f string) []byte {
	if len(f) > MaxFieldLen {
		panic(fmt.Sprintf("crypto: field of %d bytes exceeds %d", len(f), MaxFieldLen))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
	return append(b, f...)
}

// CiphertextSize returns the ciphertext length for n plaintext bytes, or -1 if n is negative.
func CiphertextSize(n int64) int64 {
	if n < 0 {
		return -1
	}
	return HeaderSize + n + TagSize*(n/SegmentSize+1)
}

// PlaintextSize returns the plaintext length of a ciphertext of c bytes. A length that no
// ciphertext can have means truncation or extension, so it is ErrAuth.
func PlaintextSize(c int64) (int64, error) {
	body := c - HeaderSize
	if body < TagSize {
		return 0, ErrAuth
	}
	full, rem := body/sealedSegment, body%sealedSegment
	if rem < TagSize { // the final segment is always shorter than a full one, tag included
		return 0, ErrAuth
	}
	return full*SegmentSize + rem - TagSize, nil
}

// segmenter holds what every segment of one item shares: the AEAD under K, the header (the
// additional data of each segment) and a nonce buffer reused for every segment.
type segmenter struct {
	aead   cipher.AEAD
	header [HeaderSize]byte
	nonce  [nonceSize]byte
}

func newSegmenter(dek, aad []byte, header [HeaderSize]byte) (*segmenter, error) {
	if len(dek) != KeySize {
		return nil, ErrKeySize
	}
	k, err := hkdf.Key(sha256.New, dek, header[1:1+saltSize], infoKey+string(aad), KeySize)
	if err != nil {
		return nil, fmt.Errorf("crypto: derive segment key: %w", err)
	}
	block, err := aes.NewCipher(k)
	clear(k)
	if err != nil {
		return nil, fmt.Errorf("crypto: cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("crypto: gcm: %w", err)
	}
	s := &segmenter{aead: aead, header: header}
	copy(s.nonce[:], header[1+saltSize:])
	return s, nil
}

// nonceFor returns the nonce of segment i; the slice is valid until the next call.
func (s *segmenter) nonceFor(i uint64, last bool) []byte {
	binary.BigEndian.PutUint32(s.nonce[prefixSize:], uint32(i))
	s.nonce[nonceSize-1] = 0
	if last {
		s.nonce[nonceSize-1] = 1
	}
	return s.nonce[:]
}

// Seal encrypts a whole plaintext in one call, for items held in memory. The result is
// allocated once at its final size and segments are sealed directly into it.
func Seal(dek, aad []byte, n Nonce, plaintext []byte) ([]byte, error) {
	s, err := newSegmenter(dek, aad, n.header())
	if err != nil {
		return nil, err
	}
	if int64(len(plaintext))/SegmentSize >= maxSegments {
		return nil, ErrTooLarge
	}
	out := make([]byte, 0, CiphertextSize(int64(len(plaintext))))
	out = append(out, s.header[:]...)
	for i := uint64(0); ; i++ {
		last := len(plaintext) < SegmentSize // a full segment is never the final one
		seg := plaintext[:min(len(plaintext), SegmentSize)]
		out = s.aead.Seal(out, s.nonceFor(i, last), seg, s.header[:])
		if last {
			return out, nil
		}
		plaintext = plaintext[SegmentSize:]
	}
}

// Open authenticates and decrypts a whole ciphertext made by Seal or NewWriter. It returns
// ErrAuth for any modification and ErrUnsupportedVersion for an unknown version byte.
func Open(dek, aad, ciphertext []byte) ([]byte, error) {
	if len(dek) != KeySize {
		return nil, ErrKeySize
	}
	if len(ciphertext) > 0 && ciphertext[0] != Version {
		return nil, ErrUnsupportedVersion
	}
	n, err := PlaintextSize(int64(len(ciphertext)))
	if err != nil {
		return nil, err
	}
	s, err := newSegmenter(dek, aad, [HeaderSize]byte(ciphertext[:HeaderSize]))
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, n)
	body := ciphertext[HeaderSize:]
	for i := uint64(0); ; i++ {
		// PlaintextSize has checked the length, so only the final segment is short.
		last := len(body) < sealedSegment
		seg := body[:min(len(body), sealedSegment)]
		if out, err = s.aead.Open(out, s.nonceFor(i, last), seg, s.header[:]); err != nil {
			clear(out[:cap(out)])
			return nil, ErrAuth
		}
		if last {
			return out, nil
		}
		body = body[sealedSegment:]
	}
}
