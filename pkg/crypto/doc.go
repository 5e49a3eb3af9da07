// Package crypto implements the Custos item encryption format: a streaming, segmented
// AES-256-GCM construction (in the style of the STREAM construction) composed only from
// standard primitives (HKDF-SHA256, AES-256-GCM). An independent program can decrypt an item
// from this specification alone.
//
// # Format (version 1)
//
// Notation: ‖ is concatenation, u16(x) and u32(x) are 2- and 4-byte big-endian integers.
//
//	ciphertext = header ‖ segment_0 ‖ … ‖ segment_last
//	header     = 0x01 ‖ salt (32 bytes) ‖ nonce_prefix (7 bytes)                  (40 bytes)
//	K          = HKDF-SHA256(ikm = DEK (32 bytes), salt = salt,
//	                         info = "custos-item-v1" ‖ aad)                         (32 bytes)
//	segment_i  = AES-256-GCM-Seal(key = K,
//	                              nonce = nonce_prefix ‖ u32(i) ‖ last,             (12 bytes)
//	                              additional data = header,
//	                              plaintext_i)                  = ciphertext_i ‖ tag (16 bytes)
//
// The plaintext of n bytes is cut into floor(n/65536)+1 segments of [SegmentSize] = 65536
// bytes; the final segment holds n mod 65536 bytes and may be empty (an empty plaintext is one
// empty final segment). A full segment is therefore never the final one. last is 0x01 for the
// final segment and 0x00 for every other. The ciphertext is 40 + n + 16·(floor(n/65536)+1)
// bytes ([CiphertextSize]).
//
// aad is associated data chosen by the caller to bind the ciphertext to its context (customer,
// data class, item). [AAD] encodes fields as u16(len) ‖ bytes each, so that distinct field lists
// never encode to the same bytes. aad is not stored; the reader must supply the same value.
//
// Why each part is there:
//   - The segment key is derived from aad, so a ciphertext presented under another customer,
//     class or item fails authentication, and every item gets its own key even under one DEK.
//   - The random or derived 32-byte salt makes K unique per item; the 7-byte prefix plus the
//     segment counter make every nonce unique under K.
//   - The counter in the nonce stops reordering and dropping segments; the final flag stops
//     truncation (the last remaining segment was sealed as non-final) and extension (nothing
//     may follow a segment sealed as final); the header as additional data stops header swaps.
//
// # Salt and nonce prefix
//
// [RandomNonce] draws them from crypto/rand. [DeriveNonce] derives them deterministically:
//
//	salt ‖ nonce_prefix = HKDF-SHA256(ikm = DEK, salt = none,
//	                                  info = "custos-item-nonce-v1" ‖ u16(len itemID) ‖ itemID ‖ contentDigest)
//	                      (39 bytes: the first 32 are the salt, the next 7 the prefix)
//
// Deterministic mode exists so that two workers encrypting the same item produce identical
// bytes, which create-only writes under deterministic object names require. It is safe because
// contentDigest must be the SHA-256 of exactly the plaintext being encrypted: a (key, nonce)
// pair then repeats only for an identical (DEK, item, plaintext), which yields an identical
// ciphertext, as in SIV modes. An observer learns only that the same item was encrypted twice.
// Never pass a digest of anything other than the plaintext given to the writer.
//
// # Reading
//
// [NewReader] authenticates each segment before releasing its plaintext, but a stream is only
// known to be complete and unmodified when Read returns io.EOF. A caller must not act on
// (commit, publish, overwrite with) the plaintext until then. Any authentication failure,
// including truncation, trailing bytes, reordering, a wrong key or wrong aad, is [ErrAuth]; an
// unknown version byte is [ErrUnsupportedVersion].
package crypto
