package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// DefaultName is the name the built-in default policy goes by (its file in this package).
const DefaultName = "default.yaml"

// Digest returns the digest of a policy file's bytes, "sha256:" and 64 lowercase hex digits: the
// form the audit log's policy_change entries record (docs/audit.md). It covers the bytes as
// written, comments included, so any edit of the file is a change.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// Source returns the bytes and base name of the policy file at path, or, when path is empty,
// those of the built-in default policy (DefaultYAML, DefaultName).
func Source(path string) ([]byte, string, error) {
	if path == "" {
		return DefaultYAML(), DefaultName, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("policy: %w", err)
	}
	return b, filepath.Base(path), nil
}
