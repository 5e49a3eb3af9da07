// Package pkcs11kms keeps the KEK of Custos on a PKCS#11 token (a hardware security module, or
// SoftHSM2 in tests) and implements keys.Ring with it. The key never leaves the token: wrapping
// and unwrapping a data key are AES-256-GCM operations that run inside it.
//
// Objects. Every KEK version is one AES-256 secret key object on the token:
//
//	CKA_CLASS CKO_SECRET_KEY, CKA_KEY_TYPE CKK_AES, CKA_VALUE_LEN 32
//	CKA_TOKEN true, CKA_PRIVATE true, CKA_SENSITIVE true, CKA_EXTRACTABLE false
//	CKA_ENCRYPT true, CKA_DECRYPT true (nothing else: no wrap, sign or derive)
//	CKA_LABEL "<prefix>-<version, 6 digits>"   e.g. "custos-kek-000001"
//	CKA_ID    16 random bytes
//
// The highest version number is the active one; every lower version still on the token is
// retired: it unwraps, never wraps. Objects whose label does not have the form prefix-NNNNNN
// are ignored, so several rings can share a token under different prefixes. KeyID is "p11-"
// followed by the hex of CKA_ID.
//
// Wrapped format:
//
//	0x02 ‖ u8 len(id) ‖ CKA_ID ‖ iv(12) ‖ AES-256-GCM(KEK, iv, DEK, ad = "custos-dek-v1" ‖ aad)
//
// with a 128-bit tag at the end of the ciphertext. The IV is drawn in Go from crypto/rand; a
// token that insists on its own IV gets its IV recorded instead. Unwrap picks the version by
// the CKA_ID in the wrapped bytes.
//
// Why one object per version: an erasure of copies under object lock is complete only when the
// KEK that wrapped their data keys can no longer be used anywhere. A token offers exactly one
// operation with that meaning, C_DestroyObject. Keeping each version in its own object lets
// DestroyRetired destroy the old versions while the active one goes on working; rotating by
// changing one object's value is impossible for a non-extractable key and would not erase the
// old value on most tokens anyway.
//
// PKCS#11 allows one C_Initialize per library and process, and login state belongs to the
// process, not to a session: rings in one process share the loaded library (the last to close
// finalizes it), and a second Open of a token this process is already logged in to must give
// the same PIN. Sessions are not safe for concurrent use; a Ring keeps a small pool of them.
//
// SoftHSM2 reads its token directory at C_Initialize: a token created by softhsm2-util after
// the library was loaded in this process is not seen until every ring on it is closed.
package pkcs11kms
