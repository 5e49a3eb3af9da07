package rclone

import "context"

// StagingFiles counts the files in the staging directory of t.
func StagingFiles(ctx context.Context, t *Target) (int, error) {
	entries, err := t.f.List(ctx, tmpDir)
	if isNotFound(err) {
		return 0, nil
	}
	return len(entries), err
}

// Redact is redact, for tests.
var Redact = redact
